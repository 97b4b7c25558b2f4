"""A full run's result in the viewer: the output's lazy Labels layer, added without blocking
(``layers.add_labels_without_blocking``), refreshed while blocks are relabelled, removed when
a Start over replaces the output."""

from __future__ import annotations

import json
from pathlib import Path

from ..attributes import COMPLETE_ATTR, PARAMETERS_ATTR
from ..blockwise.run_control import shell_command
from ..storage.paths import level_paths, zarr_node
from .callback_time import excluded
from .layers import (
    BLOCK_SIZE_KEY,
    COMMAND_KEY,
    INPUT_KEY,
    OUTPUT_KEY,
    add_labels_without_blocking,
    level0,
)
from .run_layers import RunRequest, open_result
from .visible_region import apply_placement


class RunResult:
    """The result layer of the latest run (``layer``), and the one on its way."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.layer = None
        self._request: RunRequest | None = None
        self._arriving = None  # the LabelsArrival of the result layer, while on its way
        self._refresh_after_arrival: bool | None = None  # ``complete`` of a refresh asked

    @property
    def pending(self) -> bool:
        """True while the layer is on its way into the viewer (added in steps, after the
        job may have ended)."""
        return self._arriving is not None and not self._arriving.done

    def is_ours(self, layer) -> bool:
        """``layer`` is this result's (shown or arriving)."""
        arriving = self._arriving.layer if self._arriving is not None else None
        return layer is not None and (layer is self.layer or layer is arriving)

    def show(self, request: RunRequest, command: list[str], complete: bool) -> None:
        """Add (or refresh) the lazy Labels layer of the output, placed like the affinities.

        A new layer is opened in a thread and added in short main-thread steps; a refresh
        asked for meanwhile follows it."""
        self._request = request
        if self.pending:
            self._refresh_after_arrival = complete
            return
        metadata = {
            PARAMETERS_ATTR: json.loads(request.parameters.to_json()),
            BLOCK_SIZE_KEY: list(request.block_size),
            INPUT_KEY: str(request.input_path),
            OUTPUT_KEY: str(request.output),
            COMMAND_KEY: shell_command(command),
            COMPLETE_ATTR: bool(complete),
            "source": str(request.output),
        }
        viewer = self.viewer
        existing = self.layer  # the last run's, if of this output (else it is another's)
        if (existing is None or existing not in viewer.layers
                or existing.metadata.get(OUTPUT_KEY) != str(request.output)):
            existing = next(iter(layers_showing(viewer, request.output)), None)
        if existing is None:
            self._arriving = add_labels_without_blocking(
                viewer, lambda: open_result(request.output, complete),
                record="full_run.add_layer", name=request.output.name, metadata=metadata,
                then=lambda layer: self._arrived(layer, request, command), **request.placement)
            return
        try:
            data = open_result(request.output, complete)
        except Exception:
            return  # not created yet
        if existing.ndim == level0(data).ndim and existing.multiscale == isinstance(data, list):
            existing.data = data
            existing.metadata = metadata
            apply_placement(existing, request.placement)
            self.layer = existing

    def _arrived(self, layer, request: RunRequest, command: list[str]) -> None:
        self.layer = layer
        self._arriving = None
        complete, self._refresh_after_arrival = self._refresh_after_arrival, None
        if complete is not None and request is self._request:
            self.show(request, command, complete)

    def stop(self) -> None:
        """Stop a layer on its way (the widget goes away, or the output is replaced)."""
        if self._arriving is not None:
            self._arriving.cancel()
            self._arriving = None
        self._refresh_after_arrival = None

    def remove(self, output: Path) -> None:
        """Remove the layers that show ``output`` (a Start over replaces it)."""
        self.stop()
        for layer in layers_showing(self.viewer, output):
            with excluded("full_run.remove_layer"):
                self.viewer.layers.remove(layer)
        self.layer = None


def layers_showing(viewer, output: Path) -> list:
    """The layers that show the labels at ``output``: a run's result layer, or one this
    plugin's reader opened from it (``metadata["source"]``, the labels or a level of them)."""
    from napari.layers import Labels

    target = Path(output).resolve()
    places = None  # read once, when a layer from a file needs them
    found = []
    for layer in viewer.layers:
        source = layer.metadata.get("source")
        if layer.metadata.get(OUTPUT_KEY) == str(output):
            found.append(layer)
        elif isinstance(source, str) and isinstance(layer, Labels):
            if places is None:
                places = {target, *(target / p for p in level_paths(zarr_node(target)[1]))}
            if Path(source).resolve() in places:
                found.append(layer)
    return found
