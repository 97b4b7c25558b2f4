"""The Full run section: the whole volume, blockwise, as a background job.

The job, its command and its progress lines are ``blockwise.run_control`` and
``blockwise.progress``, what its output is ``blockwise.run_outputs``; here are the controls,
the QTimer that polls the job on the main thread, the flow from Run to the job (copies made
in a thread, questions before an output is replaced), the status line and notifications.
The progress bars are ``run_progress``, the result layer ``run_result``.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import tempfile
import time
from pathlib import Path

from magicgui.widgets import Container, Label, LineEdit, PushButton, SpinBox
from psygnal import Signal
from qtpy.QtCore import QTimer

from ..attributes import PARAMETERS_ATTR
from ..blockwise.block_shape import DEFAULT_BLOCK_SIZE, block_size_for
from ..blockwise.run_control import KILL_AFTER, Job, build_command, shell_command
from ..blockwise.run_outputs import (
    DEFAULT_OUTPUT_NAME,
    GUIDE_ROLES,
    guide_copy_path,
    input_copy_path,
    output_in_use,
    output_state,
    parse_block_size,
)
from ..errors import (
    InvalidInputError,
    MutexWatershedError,
    UnsafeOutputError,
    with_world_position,
)
from ..parameters import WatershedParameters
from ..regions import check_offsets_fit
from ..safety import check_output_location, check_output_place, is_ours
from ..storage.paths import LABELS_GROUP, ZARR_SUFFIXES, is_image, named_like
from .callback_time import recorded
from .inputs_panel import Inputs
from .layers import (
    BLOCK_SIZE_KEY,
    level0,
)
from .lifecycle import disconnect_all
from .run_dialogs import ask_overwrite, ask_resume, choose_output
from .run_layers import RunRequest, default_output, world_geometry, zarr_source
from .run_progress import RunProgress
from .run_result import RunResult
from .sections import show_text, wrapping
from .visible_region import placement, world_map

#: Status texts that say why a run cannot start: recomputed when the inputs change.
CANNOT_RUN = "Cannot run: "
BLOCK_SIZE_TIP = (
    "Block shape in voxels, e.g. 64, 128, 128. Empty: the whole volume as one block when it "
    "is small, else blocks of at most {in_3d} in 3D ({in_2d} in 2D), smaller where the volume "
    "has blocks inside it, so a worker's memory does not grow with the volume. Bigger blocks "
    "are slower per block (time grows faster than the volume) but stitch less."
).format(**{f"in_{n}d": " x ".join(map(str, shape)) for n, shape in DEFAULT_BLOCK_SIZE.items()})


def _warm_imports() -> None:
    """Load, off the main thread, what the first Run checks on it (whether the output is
    in use or holds a run: the run's modules and zarr), which held it 156 to 212 ms of CPU
    on a session's first run (6 ms once loaded)."""
    from ..blockwise import launch  # noqa: F401


class FullRunPanel:
    """Workers, block size, output, Run/Cancel, progress and status of a full run (the
    controls in ``section``).

    It runs on the latest ``Inputs`` (``set_inputs``); a result's parameters go out on
    ``parameters_chosen``. Everything here runs on the main thread; only file
    hashing/copying runs on a helper thread.
    """

    parameters_chosen = Signal(object)  # WatershedParameters of a result layer
    settings_changed = Signal()  # workers or block size changed (to remember)

    poll_ms = 50
    refresh_seconds = 1.0  # while relabelling, re-read the result at most this often

    def __init__(self, viewer) -> None:
        self.section = Container(name="full_run_section")
        self.native = self.section.native
        self.viewer = viewer
        self.inputs = Inputs()
        self.command: list[str] = []
        self.job: Job | None = None
        self.last_job: Job | None = None  # the latest job, kept after it ended (inspection)
        self.request: RunRequest | None = None
        self.result = RunResult(viewer)
        self.max_retries: int | None = None  # None: the CLI's default
        self.last_error: str | None = None
        self.progress = RunProgress()
        self._future: concurrent.futures.Future | None = None
        self._next = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mutex-watershed-prepare")
        self.warmed = self._executor.submit(_warm_imports)
        self._aborted = False
        self._last_refresh = 0.0
        self._pending: dict | None = None
        self._parameters_file: Path | None = None

        self.workers = SpinBox(
            name="workers", label="Workers", value=2, min=1, max=256,
            tooltip="Worker processes of the blockwise run (each segments one block at a time).",
        )
        self.block_size = LineEdit(
            name="block_size", label="Block size",
            tooltip=BLOCK_SIZE_TIP,
        )
        self.block_size.native.setPlaceholderText("empty: chosen from the volume")
        self.output = LineEdit(
            name="output_path", label="Output",
            tooltip="The labels array to write, inside a .zarr container, e.g. "
            "volume.zarr/labels_mws. Empty: the default shown in grey.",
        )
        self.browse = PushButton(name="output_browse", text="Choose output...")
        self.run_button = PushButton(
            name="run_button", text="Run",
            tooltip="Segment the whole affinities layer blockwise in a separate process "
            "(the napari-mutex-watershed command).",
        )
        buttons = Container(widgets=[self.run_button, self.browse], layout="horizontal",
                            labels=False, name="full_run_buttons")
        buttons.margins = (0, 0, 0, 0)
        buttons.label = ""  # (a row of buttons, no title beside it)
        self.run_status = Label(name="run_status", value="")
        wrapping(self.run_status, 3)
        self.use_result = PushButton(
            name="use_result_parameters", text="Use parameters of selected result",
            tooltip="Load the parameters (and block size) a selected result layer was made "
            "with into the controls.",
        )
        self.use_result.enabled = False
        self.section.extend([self.workers, self.block_size, self.output, buttons])
        self.native.layout().addWidget(self.progress.bar)
        self.section.extend([self.run_status, self.use_result])

        self._timer = QTimer(self.native)
        self._timer.setInterval(self.poll_ms)
        self._timer.timeout.connect(self._tick)
        self._kill_timer = QTimer(self.native)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._tick)

        self.run_button.changed.connect(self._on_run_clicked)
        self.workers.changed.connect(self.settings_changed.emit)
        self.block_size.changed.connect(self.settings_changed.emit)
        self.browse.changed.connect(self._browse)
        self.use_result.changed.connect(self.use_selected_result)
        selection = viewer.layers.selection.events.active
        selection.connect(self._on_active_layer)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self._connections = [(selection, self._on_active_layer),
                             (viewer.layers.events.inserted, self._on_layer_inserted)]
        self.update_default_output()

    # ------------------------------------------------------------------ small helpers
    @recorded("full_run.inputs")
    def set_inputs(self, inputs: Inputs) -> None:
        """The inputs changed: a new default output, and a refusal that is no longer true
        (or now says something else) recomputed."""
        changed_layer = inputs.layer is not self.inputs.layer
        self.inputs = inputs
        if changed_layer:
            self.update_default_output()
        if not self.running and self.run_status.value.startswith(CANNOT_RUN):
            refusal = self._refusal()
            self._status(CANNOT_RUN + refusal if refusal else "Ready to run.")

    def _refusal(self) -> str:
        """Why a run cannot start with the current inputs and settings ('' if it can)."""
        from ..blockwise.launch import work_dir_for  # (loaded off this thread: _warm_imports)

        inputs = self.inputs
        if inputs.parameters is None or inputs.layer is None:
            return inputs.problem
        try:
            self.block_size_value(level0(inputs.layer).ndim - 1)
            output = self.output_path()
            check_output_place(output)  # before any dialog, as the job would refuse it
            work_dir_for(output)  # a name its run files cannot take (seg.lock)
            check_offsets_fit(level0(inputs.layer).shape[1:], inputs.parameters.offsets)
        except Exception as error:  # ValueError, InvalidInputError, UnsafeOutputError
            return str(error)
        return ""

    @property
    def running(self) -> bool:
        return self.job is not None or self._future is not None or self._next is not None

    @property
    def result_pending(self) -> bool:
        """True while the result layer is on its way into the viewer (added in steps after
        the job may have ended)."""
        return self.result.pending

    def _status(self, text: str, tooltip: str | None = None, whole: bool = False) -> None:
        """Show ``text`` in the status line; ``whole``: a refusal or failure, shown in full
        however many lines it takes."""
        show_text(self.run_status, text, tooltip, whole)

    def update_default_output(self, *_args) -> None:
        layer = self.inputs.layer
        text = ""
        if layer is not None:
            try:
                text = str(default_output(layer))
            except Exception:
                text = ""
        self.output.native.setPlaceholderText(text or "volume.zarr/labels_mws")

    def output_path(self) -> Path:
        text = self.output.value.strip()
        layer = self.inputs.layer
        path = Path(text).expanduser() if text else default_output(layer)
        if not any(named_like(part, ZARR_SUFFIXES) for part in path.parts):  # as the job says
            raise InvalidInputError(f"{path}: outputs are written into a .zarr container "
                                    "(e.g. volume.zarr/labels_mws)")
        if is_image(path) and not is_ours(path):  # its labels go in its labels group
            path = path / LABELS_GROUP / DEFAULT_OUTPUT_NAME
        elif named_like(path.name, ZARR_SUFFIXES):
            path = path / DEFAULT_OUTPUT_NAME
        return path.absolute()

    def block_size_value(self, ndim: int) -> tuple[int, ...] | None:
        return parse_block_size(self.block_size.value, ndim)

    # ------------------------------------------------------------------ dialogs (tests patch)
    def confirm_overwrite(self, path: Path) -> bool:
        return ask_overwrite(self.native, path)

    def confirm_resume(self, path: Path, finished: bool) -> str:
        return ask_resume(self.native, path, finished)

    def _browse(self, *_args) -> None:
        path = choose_output(self.native,
                             self.output.value or self.output.native.placeholderText())
        if path:
            self.output.value = path

    # ------------------------------------------------------------------ starting
    @recorded("full_run.run_clicked")
    def _on_run_clicked(self, *_args) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    @recorded("full_run.start")
    def start(self) -> bool:
        """Validate, then prepare the input (off the main thread if a copy is needed), ask
        about an existing output, and launch the job. False if nothing was started."""
        from napari.utils.notifications import show_error

        if self.running:
            return False
        parameters, layer = self.inputs.parameters, self.inputs.layer
        refusal = self._refusal()
        if refusal:
            self._status(CANNOT_RUN + refusal)
            if parameters is not None and layer is not None:  # (the inputs show their own)
                show_error(f"Mutex watershed: {refusal}")
            return False
        try:
            placed = placement(layer)
        except ValueError as error:
            self._status(CANNOT_RUN + str(error))
            show_error(f"Mutex watershed: {error}")
            return False
        data = level0(layer)
        shape = tuple(int(s) for s in data.shape[1:])
        block_size = block_size_for(shape, parameters, self.block_size_value(len(shape)))
        output = self.output_path()
        source = zarr_source(layer)
        request = RunRequest(
            layer_name=layer.name,
            placement=placed,
            parameters=parameters, workers=int(self.workers.value),
            block_size=block_size, output=output, source=source, shape=shape,
        )
        self.request = request
        self.last_error = None
        self._aborted = False
        self.run_button.text = "Cancel"
        for role, guide in zip(GUIDE_ROLES, (self.inputs.mask, self.inputs.seeds)):
            if guide is not None:  # copied on the affinities' voxel grid, like them
                request.guides[role] = level0(guide)
                request.guide_paths[role] = guide_copy_path(output, role)
        if source is not None:
            request.input_path = source
        else:
            request.voxel_size, request.offset = world_geometry(layer)
            request.input_path = input_copy_path(output)
            request.data = data
        if source is None or request.guides:
            self._status("Preparing: checking the layer data ...")
            self._in_thread(request.check_copies, lambda _none: self._decide())
        else:
            self._decide()
        return True

    def _in_thread(self, function, then) -> None:
        self._future = self._executor.submit(function)
        self._next = then
        self._timer.start()

    def _decide(self) -> None:
        request = self.request
        if self._aborted:
            return self._reset("Cancelled before the run started.")
        busy = output_in_use(request.output)
        if busy is not None:  # the CLI's refusal, in full (no dialog, nothing written)
            return self._reset(f"Not started: {busy}", error=True)
        try:  # the input, inside it, another tool's array: the job's refusal, before a dialog
            check_output_location(request.output, {"input": request.input_path,
                                                   **request.guide_paths})
        except UnsafeOutputError as error:
            return self._reset(f"Not started: {error}", error=True)
        try:
            state = output_state(request.input_path, request.output, request.parameters,
                                 request.block_size, request.shape, request.guide_paths)
        except MutexWatershedError as error:  # what the job would refuse: no dialog
            return self._reset(f"Not started: {error}", error=True)
        if not request.copy_current and state != "absent":
            state = "other"  # a layer's data changed since that run
        if state in ("resumable", "finished"):
            choice = self.confirm_resume(request.output, finished=state == "finished")
            if choice == "cancel":
                return self._reset("Not started.")
            request.overwrite = choice == "overwrite"
        elif state == "other":
            if not self.confirm_overwrite(request.output):
                return self._reset(f"Not started: {request.output} exists.")
            request.overwrite = True
        if request.overwrite:
            self.result.remove(request.output)  # they would show what is being replaced
        if request.copy_current:
            self._launch()
        else:
            self._status("Preparing: writing the layer data to zarr ...")
            self._in_thread(request.write_copies, lambda _none: self._launch())

    def _launch(self) -> None:
        request = self.request
        if self._aborted:
            return self._reset("Cancelled before the run started.")
        request.data, request.guides = None, {}  # (copied if need be: do not pin layer data)
        folder = Path(tempfile.mkdtemp(prefix="napari-mutex-watershed-"))
        self._parameters_file = folder / "parameters.json"
        request.parameters.save(self._parameters_file)
        command = build_command(request.input_path, request.output, self._parameters_file,
                                request.workers, request.block_size, request.overwrite,
                                self.max_retries, request.guide_paths)
        self.command = command
        try:
            self.job = self.last_job = Job(command)
        except OSError as error:
            return self._reset(f"Could not start the job: {error}", error=True)
        self._last_refresh = 0.0
        self._pending = None
        self.progress.start()
        self._status("Running: starting the job ...",
                     tooltip="Equivalent command:\n" + shell_command(command))
        self._timer.start()

    # ------------------------------------------------------------------ running
    @recorded("full_run.tick")
    def _tick(self) -> None:
        if self._future is not None:
            if not self._future.done():
                return
            future, then = self._future, self._next
            self._future = self._next = None
            try:
                value = future.result()
            except Exception as error:
                return self._reset(f"Preparing the input failed: {error}", error=True)
            then(value)
            return
        job = self.job
        if job is None:
            self._timer.stop()
            return
        finished = False
        for event in job.poll():
            if event.kind == "progress":
                self.progress.tally.add(event.progress)
                self._pending = event.progress  # only the newest line is shown
            else:
                finished = True
        if finished:
            self._on_finished()
            return
        # at most one piece of layer or progress-bar work per turn of the event loop, so
        # the UI never does two slow things in a row
        message = self._pending
        if message is not None:
            if (message["phase"] == "relabel" and message["done"]
                    and time.monotonic() - self._last_refresh >= self.refresh_seconds):
                self._last_refresh = time.monotonic()
                # blocks appear as they are relabelled
                self.result.show(self.request, self.command, complete=False)
            else:
                self._pending = None
                self._on_progress()
        if job.cancel_requested and not job.killed:
            remaining = KILL_AFTER - (time.monotonic() - job.cancelled_at)
            if remaining > 0 and not self._kill_timer.isActive():
                self._kill_timer.start(int(remaining * 1000) + 1)

    def _on_progress(self) -> None:
        self._status(f"Running: {self.progress.tally.describe()}",
                     tooltip=self.run_status.tooltip)
        self.progress.show()

    def _on_finished(self) -> None:
        from napari.utils.notifications import show_error, show_info

        job, request = self.job, self.request
        self._timer.stop()
        self._kill_timer.stop()
        if job.cancel_requested:
            where = f" at {self.progress.tally.describe()}" if job.progress else ""
            text = (f"Full run cancelled{where}; all processes stopped. Finished blocks are "
                    f"kept in {request.output}: Run again to resume.")
            self._reset(text)
            show_info(text)
        elif job.returncode == 0:
            self.result.show(self.request, self.command, complete=True)
            seconds = job.progress[-1].get("seconds") if job.progress else None
            took = f" in {seconds:.1f} s" if isinstance(seconds, int | float) else ""
            self._reset(f"Done{took}: {request.output}")
        else:
            # a bad value's voxel is the layer's own index (the job reads the whole layer);
            # its world position is the layer's (a copy stores only integral geometry)
            message = with_world_position(job.error_message(), *world_map(request.placement))
            self.last_error = message
            self._reset(f"Failed: {message}", whole=True)
            show_error(f"Mutex watershed run failed: {message}")

    # ------------------------------------------------------------------ cancel and reset
    @recorded("full_run.cancel")
    def cancel(self) -> None:
        """Stop the job (or its preparation). Non-blocking: the group gets SIGTERM now and
        SIGKILL after ``KILL_AFTER`` s; the end is reported from the timer."""
        if self.job is not None:
            self.job.cancel()
            self._status("Cancelling ...")
            self._timer.start()
            self._kill_timer.start(int(KILL_AFTER * 1000) + 1)
        elif self._future is not None or self._next is not None:
            self._aborted = True
            self._status("Cancelling ...")

    def _reset(self, text: str, error: bool = False, whole: bool = False) -> None:
        from napari.utils.notifications import show_error

        self.progress.stop()
        if self._parameters_file is not None:
            shutil.rmtree(self._parameters_file.parent, ignore_errors=True)
            self._parameters_file = None
        self.job = None
        self._future = self._next = None
        self._timer.stop()
        self.run_button.text = "Run"
        self._status(text, whole=whole or error)
        if error:
            self.last_error = text
            show_error(f"Mutex watershed: {text}")

    def shutdown(self) -> None:
        """The widget goes away: kill the job (blocking, at most about 1 s) and clean up."""
        disconnect_all(self._connections)
        self.result.stop()
        if self.job is not None:
            self.job.kill_now()
        self._aborted = True
        self.progress.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ provenance
    @recorded("full_run.active_layer")
    def _on_active_layer(self, _event=None) -> None:
        layer = self.viewer.layers.selection.active
        self.use_result.enabled = bool(layer is not None and layer.metadata.get(PARAMETERS_ATTR))

    @recorded("full_run.layer_inserted")
    def _on_layer_inserted(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and layer.metadata.get(PARAMETERS_ATTR) and not (
                self.result.is_ours(layer)) and not self.running:
            self._status(f"'{layer.name}' carries the parameters it was made with: select it "
                         "and click 'Use parameters of selected result' to load them.")
        self._on_active_layer()

    @recorded("full_run.use_result")
    def use_selected_result(self, *_args, layer=None) -> bool:
        """Load the parameters (and block size) of a result layer into the controls."""
        layer = layer if layer is not None else self.viewer.layers.selection.active
        stored = layer.metadata.get(PARAMETERS_ATTR) if layer is not None else None
        if not stored:
            self._status("Select a result layer (one with mutex_watershed_parameters).")
            return False
        try:
            parameters = WatershedParameters.model_validate(
                json.loads(stored) if isinstance(stored, str) else stored)
        except Exception as error:
            self._status(f"Cannot read the parameters of '{layer.name}': {error}")
            return False
        self.parameters_chosen.emit(parameters)
        block_size = layer.metadata.get(BLOCK_SIZE_KEY)
        if block_size:
            self.block_size.value = ", ".join(str(int(b)) for b in block_size)
        self._status(f"Loaded the parameters of '{layer.name}'.")
        return True

