"""The live preview's worker process: ``python -m napari_mutex_watershed.gui.preview_worker``.

Started by module name (``processes.start_module``), never by re-running the user's script as
multiprocessing's spawn does, so a script that opens napari without an
``if __name__ == "__main__":`` guard can use the preview. It talks to its parent over its
stdin and stdout in frames (below); stray prints of any library go to stderr instead, so
they cannot corrupt a frame. No Qt or napari import: it only segments.

Protocol: the parent sends request dicts (``None`` or end of input: exit); the worker
answers ``("ready", info)`` once after start-up, then one ``("labels", info)`` or
``("error", info)`` per request.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import time
import traceback

import numpy as np

_SIZE = struct.Struct("<Q")
#: The worker keeps what a preview frees for the next one (``freed_memory``: no page faults
#: anew) and gives it back once no parameter change came for this many seconds.
IDLE_TRIM_SECONDS = 5.0


# ---------------------------------------------------------------------------- frames
def write_frame(stream, message) -> None:
    """Pickle ``message`` (protocol 5) with its arrays' memory sent out of band, unpickled
    copies avoided: a count of parts, then each part with its length."""
    buffers = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    parts = [memoryview(payload), *(buffer.raw() for buffer in buffers)]
    stream.write(_SIZE.pack(len(parts)))
    for part in parts:
        stream.write(_SIZE.pack(part.nbytes))
        stream.write(part)
    stream.flush()


def read_frame(stream):
    """The next message from ``stream``; ``EOFError`` when it ends (also mid-frame)."""
    (count,) = _SIZE.unpack(_read_exact(stream, _SIZE.size))
    parts = [_read_exact(stream, _SIZE.unpack(_read_exact(stream, _SIZE.size))[0])
             for _ in range(count)]
    return pickle.loads(parts[0], buffers=parts[1:])


def _read_exact(stream, size: int) -> bytearray:
    """``size`` bytes into a fresh (writable) buffer: arrays unpickled on it are writable."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            raise EOFError("the pipe closed")
        done += got
    return buffer


# ---------------------------------------------------------------------------- the worker
def _warm_up(segment, parameters_class) -> None:
    """One tiny run, so the first real preview does not pay for first-call costs."""
    rng = np.random.default_rng(0)
    for ndim in (2, 3):
        parameters = parameters_class(offsets=[tuple(int(i == j) for j in range(ndim))
                                               for i in range(ndim)])
        segment(rng.random((ndim,) + (8,) * ndim, dtype=np.float32), parameters)


def serve(requests, answers) -> None:
    """Segment crops until the input ends. The last crop is kept: a parameter change on the
    same view sends only the parameters."""
    started = time.perf_counter()
    from ..engine import segment
    from ..errors import InvalidValuesError, MutexWatershedError
    from ..freed_memory import IdleTrim
    from ..parameters import WatershedParameters

    _warm_up(segment, WatershedParameters)
    idle = IdleTrim(IDLE_TRIM_SECONDS)
    write_frame(answers, ("ready", {"pid": os.getpid(),
                                    "seconds": time.perf_counter() - started}))
    crop_key, crop = None, None
    while True:
        idle.idle()  # waiting for the next change
        try:
            message = read_frame(requests)
        except EOFError:
            return
        if message is None:
            return
        if message.get("crop") is not None:
            crop, crop_key = message["crop"], message["crop_key"]
        started = time.perf_counter()
        idle.busy()
        try:
            if crop is None or crop_key != message["crop_key"]:
                raise RuntimeError("the preview worker lost its crop")
            parameters = WatershedParameters.from_json(message["parameters"])
            stages = {}
            labels = segment(crop, parameters, mask=message["mask"], seeds=message["seeds"],
                             timings=stages)
            labels = np.ascontiguousarray(labels[message["shown"]])
        except MutexWatershedError as error:  # a bad value's voxel is placed by the widget
            write_frame(answers, ("error", {"id": message["id"], "error": str(error),
                                            "invalid": error if isinstance(
                                                error, InvalidValuesError) else None}))
            continue
        except Exception as error:  # report, keep serving
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            write_frame(answers, ("error", {"id": message["id"], "error": detail}))
            continue
        write_frame(answers, ("labels", {"id": message["id"], "labels": labels, "stages": stages,
                                         "seconds": time.perf_counter() - started}))


def main() -> int:
    """Take stdin and stdout for the frames; whatever else prints goes to stderr."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), sys.stdin.fileno())
    # Ctrl-C in napari's terminal reaches this process group too: napari decides, and
    # closes the pipe (or kills this process) when it stops the preview
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(requests, answers)
    except BrokenPipeError:  # the parent went away while an answer was on its way
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
