"""The preview's worker process and dispatcher, without Qt."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import psutil
import pytest
from patience import load_per_core, patience, wait_gone

from napari_mutex_watershed import WatershedParameters, segment
from napari_mutex_watershed.freed_memory import REUSE_FREED_MEMORY, TUNABLES_ENV
from napari_mutex_watershed.gui.preview import STARTUP_TIMEOUT, PreviewRequest, PreviewService
from napari_mutex_watershed.gui.preview_worker import read_frame, write_frame
from napari_mutex_watershed.synthetic import sample_volume


@pytest.fixture(scope="module")
def service():
    service = PreviewService()
    yield service
    service.close()


@pytest.fixture(scope="module")
def volume():
    affinities, _, offsets = sample_volume((16, 48, 48))
    return affinities, WatershedParameters(offsets=offsets)


def wait(service, timeout=None):
    """The next results, waiting up to ``timeout`` s (default: 20 s scaled for the load)."""
    timeout = patience(20) if timeout is None else timeout
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        results = service.results()
        if results:
            return results
        time.sleep(0.005)
    raise TimeoutError("no preview result")


def request(id, affinities, parameters, key=("crop",), shown=None, **kwargs):
    calls = kwargs.pop("calls", [])

    def read():
        calls.append(id)
        return affinities

    return PreviewRequest(
        id=id, crop_key=key, affinities=read, parameters_json=parameters.to_json(),
        shown=shown or (slice(None),) * (affinities.ndim - 1), **kwargs,
    )


def test_result_equals_segment_and_crop_is_sent_once(service, volume):
    affinities, parameters = volume
    calls = []
    service.submit(request(1, affinities, parameters, calls=calls))
    (result,) = wait(service)
    assert result.error is None and result.id == 1
    np.testing.assert_array_equal(result.labels, segment(affinities, parameters))

    other = parameters.model_copy(update={"bias_short": 0.6, "min_size": 5})
    shown = (slice(3, 4), slice(None), slice(10, 40))
    service.submit(request(2, affinities, other, calls=calls, shown=shown))
    (result,) = wait(service)
    np.testing.assert_array_equal(result.labels, segment(affinities, other)[shown])
    assert calls == [1], "the worker keeps the crop: a parameter change does not resend it"


def test_results_say_where_the_time_went(service, volume):
    """The worker's stages and the service's times, for bench_preview's breakdown."""
    affinities, parameters = volume
    service.submit(request(3, affinities, parameters.model_copy(update={"bias_short": 0.4})))
    (result,) = wait(service)
    assert set(result.stages) == {"weights", "kernel", "finalize"}
    assert 0 < sum(result.stages.values()) <= result.compute_seconds
    meta = result.meta
    assert meta["submitted"] <= meta["sent"] <= meta["answered"]
    assert meta["answered"] - meta["sent"] >= result.compute_seconds


def test_newest_request_wins(service, volume):
    affinities, parameters = volume
    for i in range(10, 16):
        changed = parameters.model_copy(update={"bias_short": 0.3 + 0.05 * (i - 10)})
        service.submit(request(i, affinities, changed, key=("other",)))
    results = wait(service)
    deadline = time.monotonic() + patience(5)  # (the service idle: nothing else will come)
    while not service.is_idle() and time.monotonic() < deadline:
        results += service.results()
        time.sleep(0.005)
    results += service.results()
    assert [r.id for r in results] == [15]
    expected = parameters.model_copy(update={"bias_short": 0.55})
    np.testing.assert_array_equal(results[0].labels, segment(affinities, expected))


def test_errors_come_back_as_messages(service, volume):
    affinities, parameters = volume
    broken = affinities.copy()
    broken[0, 1, 2, 3] = np.nan
    service.submit(request(20, broken, parameters, key=("nan",)))
    (result,) = wait(service)
    assert result.labels is None and "NaN" in result.error
    # the worker still serves
    service.submit(request(21, affinities, parameters, key=("crop",)))
    (result,) = wait(service)
    assert result.error is None


def test_a_bad_value_is_named_in_the_layers_coordinates(service, volume):
    """The worker only sees its crop: the message gives the voxel of the whole layer and its
    world position, from the crop's start and the layer's scale and translate."""
    from napari_mutex_watershed.gui.visible_region import Region

    affinities, parameters = volume
    broken = affinities.copy()
    broken[1, 2, 3, 4] = np.inf
    region = Region((100, 200, 300), (116, 248, 348), (100, 200, 300), (116, 248, 348))
    meta = {"region": region, "scale": (40.0, 4.0, 4.0), "translate": (1000.0, 0.0, -8.0)}
    service.submit(request(22, broken, parameters, key=("inf",), meta=meta))
    (result,) = wait(service)
    assert result.labels is None
    assert "in channel 1, first at voxel (102, 203, 304), world position (5080, 812, 1208)" in (
        result.error), result.error


def test_seeds_and_mask_are_used(service, volume):
    affinities, parameters = volume
    mask = np.ones(affinities.shape[1:], bool)
    mask[:, :10] = False
    seeds = np.zeros(affinities.shape[1:], np.uint32)
    seeds[8, 20, 20] = 7
    service.submit(request(30, affinities, parameters, mask=mask, seeds=seeds))
    (result,) = wait(service)
    np.testing.assert_array_equal(
        result.labels, segment(affinities, parameters, mask=mask, seeds=seeds)
    )
    assert result.labels[8, 20, 20] == 7 and not result.labels[:, :10].any()


def test_close_stops_the_workers(volume):
    service = PreviewService(spare=False)
    affinities, parameters = volume
    service.submit(request(1, affinities, parameters))
    wait(service)
    pid = service.worker_pids()["active"]
    worker = psutil.Process(pid)
    service.close()
    assert wait_gone([worker], seconds=5) == []


# ------------------------------------------------------------------ how workers start
def test_workers_run_the_worker_module_not_the_callers_script(service, volume):
    affinities, parameters = volume
    service.submit(request(40, affinities, parameters))
    wait(service)
    for pid in service.worker_pids().values():
        command = psutil.Process(pid).cmdline()
        assert command[1:] == ["-m", "napari_mutex_watershed.gui.preview_worker"], command
    assert 0 < service.startup_seconds() < STARTUP_TIMEOUT


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_workers_keep_freed_memory_for_the_next_preview(service, volume):
    """Started with the reuse settings of ``freed_memory`` (the next preview faults no pages
    in anew), unless the user set their own."""
    if TUNABLES_ENV in os.environ:
        pytest.skip("the user's own malloc settings")
    affinities, parameters = volume
    service.submit(request(41, affinities, parameters))
    wait(service)
    for pid in service.worker_pids().values():
        # glibc cuts the variable after the first setting it read: compare that one
        first = REUSE_FREED_MEMORY.split(":")[0]
        assert psutil.Process(pid).environ()[TUNABLES_ENV].startswith(first)


def test_frames_carry_arrays_and_end_cleanly():
    """The pipe protocol: arrays of any layout and dtype arrive equal and writable; a pipe
    that ends, even inside a frame, is an EOFError rather than a hang or garbage."""
    import io

    strided = np.arange(60, dtype=np.uint64).reshape(3, 4, 5)[:, ::2, 1:]
    message = {"crop": np.ones((2, 3, 4), np.float32), "seeds": strided, "mask": None,
               "shown": (slice(1, 2), slice(None)), "empty": np.zeros((0, 3), bool)}
    stream = io.BytesIO()
    write_frame(stream, message)
    write_frame(stream, None)
    data = stream.getvalue()
    stream = io.BytesIO(data)
    received = read_frame(stream)
    assert read_frame(stream) is None
    for key in ("crop", "seeds", "empty"):
        np.testing.assert_array_equal(received[key], message[key])
        assert received[key].dtype == message[key].dtype
    assert received["crop"].flags.writeable and received["shown"] == message["shown"]
    with pytest.raises(EOFError):
        read_frame(stream)
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(data[: len(data) // 2]))


def _first_result(service, timeout=None):
    started = time.monotonic()
    (result,) = wait(service, timeout)
    return result, time.monotonic() - started


def test_a_worker_that_cannot_start_is_an_error_within_seconds(volume, monkeypatch):
    """An import error in the worker: the request fails with the reason instead of waiting
    forever, no worker is restarted in a loop, and a new request tries again."""
    from napari_mutex_watershed.gui import preview

    started = []
    start_module = preview.start_module
    monkeypatch.setattr(preview, "start_module",
                        lambda *a, **k: started.append(a) or start_module(*a, **k))
    affinities, parameters = volume
    service = PreviewService(module="napari_mutex_watershed.no_such_module")
    try:
        service.submit(request(1, affinities, parameters))
        result, seconds = _first_result(service)
        assert result.id == 1 and result.labels is None
        assert "could not start" in result.error and "exit code 1" in result.error
        assert "No module named napari_mutex_watershed.no_such_module" in result.error
        # within seconds: 10 on an idle machine, longer by the load
        assert seconds < 10 * (1 + load_per_core()), f"the failure took {seconds:.1f} s"
        assert service.worker_pids() == {"active": None, "spare": None}
        assert service.start_failure == result.error
        service.submit(request(2, affinities, parameters))
        result, _ = _first_result(service)
        assert result.id == 2 and "could not start" in result.error
        assert len(started) <= 4, f"{len(started)} starts for two requests: a restart loop"
    finally:
        service.close()


def test_a_missing_interpreter_is_an_error(volume, monkeypatch, tmp_path):
    affinities, parameters = volume
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    service = PreviewService(spare=False)
    try:
        service.submit(request(1, affinities, parameters))
        result, seconds = _first_result(service)
        assert "could not start" in result.error and "no-python" in result.error
        assert seconds < 10 * (1 + load_per_core())
    finally:
        service.close()
