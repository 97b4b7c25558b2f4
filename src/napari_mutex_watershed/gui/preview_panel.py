"""The Preview section: segment what the view shows, live, in worker processes (``preview``),
and show it in a Labels layer kept on top of the layer list.

It acts on the latest ``Inputs`` of the inputs panel (``set_inputs``) and on the viewer's
camera and dims; problems go out on ``problem`` (the inputs panel shows them).
"""

from __future__ import annotations

import json
import time

import numpy as np
from magicgui.widgets import CheckBox, Container, Label, SpinBox
from psygnal import Signal
from qtpy.QtCore import QTimer

from .callback_time import recorded
from .inputs_panel import Inputs, identity
from .layers import PREVIEW_KEY, add_labels_without_blocking, is_transient, level0
from .lifecycle import disconnect_all
from .parameter_widgets import segmentation_key
from .preview import PreviewRequest, PreviewService
from .sections import Section, show_text, wrapping
from .visible_region import (
    NotVisible,
    apply_placement,
    placement,
    visible_region,
    world_map,
)

PREVIEW_LAYER_NAME = "mutex watershed preview"
#: The view options, remembered between sessions.
VIEW_OPTIONS = ("context_slices", "max_box_3d", "max_box_2d")
#: How often (ms) the panel looks for results: on average half of it is added to a preview's
#: latency; a look costs the main thread a few microseconds.
POLL_MS = 10


class PreviewPanel(Container):
    """Preview toggle, view options and status; the preview layer and the worker service."""

    problem = Signal(str)  # a text for the inputs' message line ('' clears it)
    problem_over = Signal(str)  # a failure shown before is over: clear it if still shown
    options_changed = Signal()  # a view option changed (to remember)

    def __init__(self, viewer, *, preview_timeout: float | None = None) -> None:
        super().__init__(name="preview_section")
        self.viewer = viewer
        self.inputs = Inputs()
        self.last_result = None  # the PreviewResult shown last (for tests and benchmarks)
        self.debounce_ms = 150
        self.leading_edge = True
        self._closed = False
        self._request_id = 0
        self._failure_shown: str | None = None  # a failure of ours sent to the message line
        self._last_key = None
        self._last_dispatch = 0.0
        self._shown_status = ("Preview off", None)
        self._preview_layer = None
        self._arriving = None  # the LabelsArrival of the preview layer, while on its way
        self._waiting_result = None  # the newest result, shown once the layer is in
        self._keep_on_top = True
        self._moving = False
        self._service: PreviewService | None = None
        self._preview_timeout = preview_timeout
        self.service_box = [None]  # (the widget stops the service whoever closes it)

        self.preview = CheckBox(
            name="preview", text="Preview", label="", value=False,
            tooltip=f"Segment the visible region and show it in the '{PREVIEW_LAYER_NAME}' "
            "layer; updates when parameters, the view or the slice change.",
        )
        self.context_slices = SpinBox(
            name="context_slices", label="Context slices", value=3, min=0, max=64,
            tooltip="2D view of 3D affinities: segment this many extra slices on each side "
            "of the current one, so offsets along the hidden axis still act. Only the "
            "current slice is shown.",
        )
        self.max_box_3d = SpinBox(
            name="max_box_3d", label="Max 3D box", value=96, min=8, max=512,
            tooltip="3D view: segment at most this many voxels along each axis, centred on "
            "the view (the time grows faster than the volume).",
        )
        self.max_box_2d = SpinBox(
            name="max_box_2d", label="Max 2D size", value=1024, min=16, max=8192,
            tooltip="2D view: segment at most this many pixels along each axis, centred on "
            "the view.",
        )
        self.status = Label(name="status", value="Preview off")
        wrapping(self.status, 2)
        options = Container(name="view_options",
                            widgets=[self.context_slices, self.max_box_3d, self.max_box_2d])
        self.extend([self.preview, self.status])
        self.native.layout().addWidget(Section("Preview region", options.native, False))

        self._debounce = QTimer(self.native)
        self._debounce.setSingleShot(True)
        self._debounce.timeout.connect(self._dispatch)
        self._poll = QTimer(self.native)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._poll_results)

        for widget in (self.context_slices, self.max_box_3d, self.max_box_2d):
            widget.changed.connect(self._on_view_option_changed)
        self.preview.changed.connect(self._on_preview_toggled)
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        layers = viewer.layers.events
        self._connections = [
            (camera.events.center, self._schedule),
            (camera.events.zoom, self._schedule),
            (camera.events.angles, self._schedule),
            (viewer.dims.events.point, self._schedule),
            (viewer.dims.events.ndisplay, self._schedule),
            (viewer.dims.events.order, self._schedule),
            (layers.inserted, self._on_layer_inserted),
            (layers.removed, self._on_layer_removed),
            (layers.moved, self._on_layer_moved),
        ]
        if hasattr(viewer, "canvas"):
            self._connections.append((viewer.canvas.events.size, self._schedule))
        for emitter, callback in self._connections:
            emitter.connect(callback)

    # ------------------------------------------------------------------ inputs and options
    @recorded("preview.inputs")
    def set_inputs(self, inputs: Inputs) -> None:
        only_parameters = _same_data(self.inputs, inputs)
        self.inputs = inputs
        self._schedule(now=only_parameters)

    @recorded("widget.view_option_changed")
    def _on_view_option_changed(self, *_args) -> None:
        self.options_changed.emit()
        self._schedule()

    def _status(self, text: str, tooltip: str | None = None) -> None:
        show_text(self.status, text, tooltip)

    # ------------------------------------------------------------------ the layer on top
    @property
    def preview_layer(self):
        layer = self._preview_layer
        return layer if layer is not None and layer in self.viewer.layers else None

    @recorded("preview.layer_inserted")
    def _on_layer_inserted(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is None or is_transient(layer):
            return  # (the sweep's layers belong above: they are the preview's alternatives)
        if self._keep_on_top and self.preview_layer is not None:
            QTimer.singleShot(0, self._raise_preview)  # after napari finished the insert

    def _raise_preview(self) -> None:
        layer, layers = self.preview_layer, self.viewer.layers
        if layer is None or not self._keep_on_top or _is_top(layers, layer):
            return
        self._moving = True
        try:
            layers.move(layers.index(layer), len(layers))
        finally:
            self._moving = False

    @recorded("preview.layer_moved")
    def _on_layer_moved(self, _event=None) -> None:
        layer = self.preview_layer
        if layer is not None and not self._moving:
            self._keep_on_top = _is_top(self.viewer.layers, layer)  # the user's choice

    @recorded("widget.layers_changed")
    def _on_layer_removed(self, _event=None) -> None:
        if self._closed or self._preview_layer is None:
            return
        if self._preview_layer not in self.viewer.layers:
            self._preview_layer = None  # deleted by the user: make a new one
            self._keep_on_top = True
            self._last_key = None
            self._schedule()

    # ------------------------------------------------------------------ preview
    @recorded("preview.toggled")
    def _on_preview_toggled(self, on: bool) -> None:
        if on:
            self._last_key = None
            self.service()  # start the worker now; it warms up while the crop is chosen
            self._poll.start()
            self._dispatch()
        else:
            self._debounce.stop()
            self._request_id += 1
            if self._service is not None:
                self._service.cancel(self._request_id)
            self._poll.stop()
            self._status("Preview off")

    def service(self) -> PreviewService:
        if self._service is None or self._service.closed:
            kwargs = {} if self._preview_timeout is None else {"timeout": self._preview_timeout}
            self._service = PreviewService(**kwargs)
            self.service_box[0] = self._service
        return self._service

    @recorded("preview.schedule")
    def _schedule(self, *_args, now: bool = False) -> None:
        """Ask for a new preview: if idle (leading edge) at once, else after the debounce.

        ``now``: the change is complete (new parameters on the same data), so a leading-edge
        request goes out within this call, not after the window has repainted (20 ms under
        software OpenGL).
        """
        if self._closed or not self.preview.value:
            return
        if self._debounce.isActive():
            self._debounce.start(self.debounce_ms)
            return
        quiet = (time.perf_counter() - self._last_dispatch) * 1000 >= self.debounce_ms
        if self.leading_edge and quiet and self._service is not None and self._service.is_idle():
            if now:
                self._dispatch()
            else:
                # at the next turn of the event loop, not inside the event: the emitter may
                # not have finished its change (napari emits `paint` before writing the data)
                self._debounce.start(0)
        else:
            self._debounce.start(self.debounce_ms)

    def current_region(self, layer=None):
        """The crop of ``layer`` (default: the affinities) to segment for the current view."""
        layer = layer if layer is not None else self.inputs.layer
        viewer = self.viewer
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        canvas_size = viewer.canvas.size if hasattr(viewer, "canvas") else (600, 800)
        data = level0(layer)
        ndisplay = viewer.dims.ndisplay
        return visible_region(
            data_shape=tuple(data.shape),
            spatial_axes=tuple(range(1, data.ndim)),
            world_point=tuple(viewer.dims.point),
            displayed=tuple(viewer.dims.displayed),
            camera_center=tuple(camera.center),
            zoom=float(camera.zoom),
            canvas_size=tuple(canvas_size),
            world_to_data=layer.world_to_data,
            context=self.context_slices.value if ndisplay == 2 else 0,
            max_size=self.max_box_3d.value if ndisplay == 3 else self.max_box_2d.value,
        )

    @recorded("preview.dispatch")
    def _dispatch(self, *_args) -> None:
        """Send the newest preview request to the worker (main thread, cheap)."""
        if self._closed or not self.preview.value:
            return
        inputs = self.inputs
        parameters, layer = inputs.parameters, inputs.layer
        if parameters is None:
            self.problem.emit(inputs.problem)
            self._status("Preview paused: fix the problem above", inputs.problem)
            return
        if layer is None:
            self._status("Preview: no affinities layer")
            return
        try:
            region = self.current_region(layer)
            placement(layer, region.shown_start)  # a transform no result can follow: say so
        except NotVisible as reason:
            self._status(f"Preview: {reason}")
            return
        except ValueError as error:
            self._show_failure(str(error))
            return
        data = level0(layer)
        crop_key = (inputs.key_of(layer), id(data), region.start, region.stop)
        key = (crop_key, segmentation_key(parameters), region.shown_start, region.shown_stop,
               inputs.key_of(inputs.mask), inputs.key_of(inputs.seeds))
        if key == self._last_key:
            self._status(*self._shown_status)  # (what a pause or a note replaced)
            return
        self._last_key = key
        self._last_dispatch = time.perf_counter()
        self._request_id += 1
        slices = (slice(None),) + region.slices
        request = PreviewRequest(
            id=self._request_id,
            crop_key=crop_key,
            affinities=lambda: np.asarray(data[slices]),
            parameters_json=parameters.to_json(),
            shown=region.shown_in_crop,
            mask=_crop(inputs.mask, region),
            seeds=_crop(inputs.seeds, region),
            meta={"region": region, "layer": layer.name, "parameters": parameters,
                  **dict(zip(("scale", "translate"), world_map(placement(layer))))},
        )
        self._shown_status = (f"Preview: computing {' x '.join(map(str, region.shape))} ...",
                              None)
        self._status(*self._shown_status)
        self.service().submit(request)
        if not self._poll.isActive():
            self._poll.start()

    @recorded("preview.poll")
    def _poll_results(self) -> None:
        if self._service is None:
            return
        for result in self._service.results():
            result.meta["received"] = time.perf_counter()
            if result.id != self._request_id:
                continue  # overtaken: a newer request is on its way
            self._apply(result)

    def _show_failure(self, text: str) -> None:
        self._failure_shown = text
        self.problem.emit(text)

    @recorded("preview.apply")
    def _apply(self, result) -> None:
        """Show a result (main thread only)."""
        if result.error is not None:
            self._last_key = None  # let the next event try again
            self._show_failure(f"Preview failed: {result.error}")
            self._status("Preview failed", f"Preview failed: {result.error}")
            return
        region = result.meta["region"]
        layer = self.inputs.layer
        if layer is None:
            return
        try:
            placed = placement(layer, region.shown_start)
        except ValueError as error:
            self._show_failure(str(error))
            self._status("Preview failed", str(error))
            return
        metadata = {
            PREVIEW_KEY: True,
            "region_start": region.start,
            "region_stop": region.stop,
            "shown_start": region.shown_start,
            "parameters": json.loads(result.meta["parameters"].to_json()),
        }
        preview = self.preview_layer
        if preview is not None and preview.ndim != result.labels.ndim:
            self._preview_layer = None
            self.viewer.layers.remove(preview)  # another layer's dimensionality
            preview = None
        if preview is None:  # added in short steps; this result is shown once it is in
            if self._arriving is None:
                self._arriving = add_labels_without_blocking(
                    self.viewer, result.labels, record="preview.add_layer",
                    name=PREVIEW_LAYER_NAME, metadata=metadata, **placed,
                    then=self._layer_arrived, failed=lambda _error: self._layer_arrived(None))
            self._waiting_result = result
            return
        apply_placement(preview, placed)
        preview.metadata = metadata
        if preview.data is not result.labels:
            preview.data = result.labels
        self.last_result = result
        if self._failure_shown is not None:  # over; a message of others stays
            self.problem_over.emit(self._failure_shown)
            self._failure_shown = None
        self._shown_status = (
            f"Preview of {' x '.join(map(str, region.shape))} voxels: "
            f"{result.compute_seconds:.2f} s",
            f"Segmented voxels {region.start} to {region.stop} (exclusive) of "
            f"'{layer.name}'; {result.compute_seconds:.2f} s in the worker, "
            f"{result.total_seconds:.2f} s from the request to the result.",
        )
        self._status(*self._shown_status)

    def _layer_arrived(self, layer) -> None:
        self._arriving = None
        self._preview_layer = layer
        result, self._waiting_result = self._waiting_result, None
        if result is not None and layer is not None:
            self._apply(result)

    # ------------------------------------------------------------------ teardown
    def close_preview(self) -> None:
        """Stop the preview and its worker processes (also done when the widget is deleted)."""
        self._debounce.stop()
        self._poll.stop()
        if self._arriving is not None:
            self._arriving.cancel()
            self._arriving = self._waiting_result = None
        if self._service is not None:
            self._service.close()
            self._service = None
            self.service_box[0] = None

    def stop_listening(self) -> None:
        """The widget goes away: stop listening to the viewer."""
        self._closed = True
        disconnect_all(self._connections)


def _crop(layer, region):
    if layer is None:
        return None
    return np.ascontiguousarray(np.asarray(level0(layer)[region.slices]))


def _same_data(before: Inputs, after: Inputs) -> bool:
    """The same layers with the same edits: only parameters changed."""
    return (identity(before.layer), identity(before.mask), identity(before.seeds),
            before.versions) == (identity(after.layer), identity(after.mask),
                                 identity(after.seeds), after.versions)


def _is_top(layers, layer) -> bool:
    return len(layers) > 0 and identity(layers[-1]) == identity(layer)
