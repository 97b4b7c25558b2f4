"""processes.py with real child processes: trees of python processes started by module name.

The helper modules are written to a temporary folder and run with ``python -m`` from there
(``start_module``'s ``cwd``), so nothing here depends on the package's own workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from patience import patience, running, wait_gone

from napari_mutex_watershed import processes

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups and nice: POSIX")

#: node.py DEPTH FOLDER [ignore-term]: starts two children of DEPTH - 1 (plain Popen, so
#: they stay in its process group), writes FOLDER/<pid> once they are started, then waits.
NODE = """
    import os, signal, subprocess, sys, time
    depth, folder = int(sys.argv[1]), sys.argv[2]
    rest = sys.argv[3:]
    if "ignore-term" in rest:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    children = [subprocess.Popen([sys.executable, "-m", "node", str(depth - 1), folder, *rest])
                for _ in range(2 if depth > 0 else 0)]
    open(os.path.join(folder, str(os.getpid())), "w").close()
    while True:
        time.sleep(60)
"""
#: whoami.py: prints the name it runs under, this process's group and niceness.
WHOAMI = """
    import os, sys
    print(__spec__.name, __name__, os.getpgid(0) == os.getpid(), os.nice(0),
          os.environ.get("PYTHONUNBUFFERED"), flush=True)
"""
#: nicer.py N: lowers its own priority to N (never raises it), prints the niceness.
NICER = """
    import os, sys
    from napari_mutex_watershed.processes import lower_priority
    lower_priority(None, int(sys.argv[1]))
    print(os.nice(0), flush=True)
"""
#: parent.py FOLDER: starts two trees, stops every descendant, prints what it had started.
PARENT = """
    import os, sys, time
    from napari_mutex_watershed import processes
    folder = sys.argv[1]
    roots = [processes.start_module("node", ["1", folder]) for _ in range(2)]
    while len(os.listdir(folder)) < 6:
        time.sleep(0.01)
    family = processes.descendants()
    processes.stop_descendants()
    print(*[p.pid for p in family], flush=True)
"""


@pytest.fixture
def modules(tmp_path):
    """A folder with the helper modules; start_module runs them from there."""
    folder = tmp_path / "modules"
    folder.mkdir()
    for name, text in (("node", NODE), ("whoami", WHOAMI), ("nicer", NICER),
                       ("parent", PARENT)):
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def started():
    """Processes a test starts: whatever is left is killed at the end."""
    roots: list[subprocess.Popen] = []
    yield roots
    for root in roots:
        processes.stop_tree(root.pid, grace=0.1)
        root.wait(timeout=patience(5))


def start_tree(modules, tmp_path, started, depth=2, *extra, **kwargs):
    """A tree of 2**(depth+1) - 1 node processes; returns (root Popen, every psutil.Process)
    once all of them are up (each has written its pid)."""
    ready = tmp_path / "ready"
    ready.mkdir(exist_ok=True)
    root = processes.start_module("node", [depth, ready, *extra], cwd=modules, **kwargs)
    started.append(root)
    expected = 2 ** (depth + 1) - 1
    deadline = time.monotonic() + patience(20)
    while len(os.listdir(ready)) < expected:
        assert root.poll() is None, "the tree's root ended"
        assert time.monotonic() < deadline, "the tree did not start"
        time.sleep(0.01)  # (polling the condition)
    family = processes.tree(root.pid)  # the root first, then everything below it
    assert family[0].pid == root.pid
    assert sorted(p.pid for p in family) == sorted(int(n) for n in os.listdir(ready))
    assert sorted(p.pid for p in processes.descendants(root.pid)) == sorted(
        p.pid for p in family[1:])
    return root, family


def test_stop_tree_leaves_no_process(modules, tmp_path, started):
    """Every process of the tree ends, those ignoring SIGTERM too (SIGKILL after the grace),
    and orphans reparented when their parent dies first are still reached."""
    root, family = start_tree(modules, tmp_path, started, 2, "ignore-term")
    assert len(family) == 7
    processes.stop_tree(root.pid, grace=0.2)
    root.wait(timeout=patience(5))
    assert wait_gone(family, seconds=5) == []


def test_stop_tree_can_spare_the_root(modules, tmp_path, started):
    root, family = start_tree(modules, tmp_path, started, 1)
    processes.stop_tree(root.pid, grace=0.2, include_root=False)
    assert wait_gone(family[1:], seconds=5) == []
    assert root.poll() is None and running(family[0])


def test_stop_descendants_of_another_process(modules, tmp_path):
    """Run in a child of ours, so this test process's own children are not touched."""
    ready = tmp_path / "ready"
    ready.mkdir()
    out = subprocess.run([sys.executable, "-m", "parent", str(ready)], cwd=modules,
                         capture_output=True, text=True, timeout=patience(30))
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 6
    left = []
    for pid in pids:
        try:
            left.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    assert wait_gone(left, seconds=5) == []


def test_stop_kills_what_ignores_sigterm(modules, tmp_path, started):
    root, family = start_tree(modules, tmp_path, started, 0, "ignore-term")
    began = time.monotonic()
    processes.stop(family, grace=0.3)
    assert time.monotonic() - began >= 0.3  # SIGTERM was ignored: it waited the grace
    assert wait_gone(family, seconds=5) == []


def test_signal_group_reaches_the_whole_group(modules, tmp_path, started):
    root, family = start_tree(modules, tmp_path, started, 2, group=True)
    assert {os.getpgid(p.pid) for p in family} == {root.pid}  # a group of its own
    assert os.getpgid(0) != root.pid
    assert processes.signal_group(root.pid, signal.SIGTERM)
    assert root.wait(timeout=patience(5)) == -signal.SIGTERM
    assert wait_gone(family, seconds=5) == []
    assert not processes.signal_group(2**22 + 12345, signal.SIGTERM)  # no such group


def test_without_group_the_child_stays_in_ours(modules, tmp_path, started):
    root, _ = start_tree(modules, tmp_path, started, 0)
    assert os.getpgid(root.pid) == os.getpgid(0)
    assert processes.own_group() == {"process_group": 0}


def test_start_module_runs_by_module_name(modules, tmp_path):
    """The child runs the module as __main__ under its own name: the caller's __main__ (a
    script without a main guard) is not imported again, unlike multiprocessing's spawn."""
    marker = tmp_path / "imported"
    script = tmp_path / "script.py"  # no `if __name__ == "__main__"` guard
    script.write_text(textwrap.dedent(f"""
        import subprocess
        from napari_mutex_watershed import processes
        with open({str(marker)!r}, "a") as handle:
            handle.write("script\\n")
        child = processes.start_module("whoami", cwd={str(modules)!r}, group=True,
                                       niceness=3, stdout=subprocess.PIPE, text=True)
        print(child.communicate()[0], end="")
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=patience(30))
    assert out.returncode == 0, out.stderr
    assert marker.read_text() == "script\n"  # imported once: by its own run
    name, main, own_group, nice, unbuffered = out.stdout.split()
    assert (name, main, own_group, unbuffered) == ("whoami", "__main__", "True", "1")
    assert int(nice) == 3


@pytest.mark.skipif(shutil.which("nice") is None, reason="no nice command")
def test_a_child_is_started_at_its_niceness_not_lowered_after():
    """Lowered from the parent after the start, a child's first steps (and anything it
    starts then) would run at the parent's niceness: ``nice`` starts it lowered."""
    current = os.nice(0)
    command = processes.nice_command(current + 3)
    assert command[0] == shutil.which("nice") and command[1:] == ["-n", "3"]
    assert processes.nice_command(current) == []  # nothing to lower
    assert processes.nice_command(0) == []
    out = subprocess.run(
        [*command, sys.executable, "-c", "import os; print(os.nice(0))"],
        capture_output=True, text=True, timeout=patience(30))
    assert int(out.stdout) == current + 3


def test_lower_priority_raises_niceness(modules, tmp_path, started):
    root, (node,) = start_tree(modules, tmp_path, started, 0, niceness=4)
    assert node.nice() == 4  # start_module(niceness=...)
    processes.lower_priority(root.pid, 11)
    assert node.nice() == 11
    if hasattr(psutil, "IOPRIO_CLASS_BE"):
        assert tuple(node.ionice())[:2] == (psutil.IOPRIO_CLASS_BE, 7)
    # of the calling process: lowered, never raised
    for start, wanted, expected in ((0, 9, 9), (12, 9, 12)):
        out = subprocess.run([sys.executable, "-c", (
            f"import os, runpy, sys; os.nice({start}); sys.argv = ['nicer', '{wanted}']; "
            "runpy.run_module('nicer', run_name='__main__')")], cwd=modules,
            capture_output=True, text=True, timeout=patience(30))
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == expected


def test_gone_processes_are_quiet():
    gone = 2**22 + 12345  # (above Linux's largest pid)
    processes.lower_priority(gone, 10)  # nothing raised
    assert processes.tree(gone) == [] and processes.descendants(gone) == []


def test_holder_description_names_the_command(modules, tmp_path, started):
    root, _ = start_tree(modules, tmp_path, started, 0)
    text = processes.holder_description(root.pid)
    assert text.startswith(f"pid {root.pid} (") and "-m node 0" in text
    assert processes.holder_description(2**22 + 12345) == f"pid {2**22 + 12345}"
