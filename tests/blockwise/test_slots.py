"""Slots: at most ``count`` blocks compute at once across worker processes, and a killed
process gives its slot back."""

import json
import signal
import subprocess
import sys
import time

from napari_mutex_watershed.blockwise.slots import slot

HOLD = """
import json, sys, time
from pathlib import Path
from napari_mutex_watershed.blockwise.slots import slot
with slot(Path(sys.argv[1]), 2):
    started = time.time()
    print("in", flush=True)
    time.sleep(float(sys.argv[2]))
    print(json.dumps([started, time.time()]), flush=True)
"""


def _hold(directory, seconds):
    return subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def test_no_more_than_count_processes_hold_a_slot(tmp_path):
    processes = [_hold(tmp_path, 0.4) for _ in range(5)]
    spans = [json.loads(p.communicate(timeout=30)[0].splitlines()[-1]) for p in processes]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 2
    assert all(p.returncode == 0 for p in processes)


def test_a_killed_holder_frees_its_slot(tmp_path):
    holders = [_hold(tmp_path, 60) for _ in range(2)]
    for holder in holders:
        assert holder.stdout.readline().strip() == "in"
    holders[0].send_signal(signal.SIGKILL)
    holders[0].wait()
    started = time.time()
    with slot(tmp_path, 2):
        assert time.time() - started < 5
    holders[1].kill()
    holders[1].wait()


def test_no_directory_means_no_limit():
    with slot(None, 1), slot(None, 1):
        pass
