"""The memory of a process tree by role, sampled while it runs: which process grows.

RSS counts pages a process shares (libraries, memory-mapped files, the page cache of files
it maps) once per process, so a tree's summed RSS overstates it; PSS splits shared pages
between their users (the tree's PSS sums to what it really holds) and USS counts only a
process's own pages. Roles: the CLI (the root), the job process, the daisy workers of each
step (by the task id daisy hands them), anything else by its command line.

    python benchmarks/tree_memory.py COMMAND ...    # the table of one command's tree
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import defaultdict

import psutil

#: Seconds between two samples.
INTERVAL = 0.05
KINDS = ("rss", "pss", "uss")


def role(process: psutil.Process, root: psutil.Process) -> str:
    """What a process of the tree is: cli, job, zygote, worker <step>, worker (forked), or its
    command's module."""
    if process.pid == root.pid:
        return "cli"
    command = " ".join(process.cmdline())
    if "blockwise.job" in command:  # the job, its zygote and the workers forked from it
        forks = 0
        parent = process.parent()
        while parent is not None and "blockwise.job" in " ".join(parent.cmdline()):
            forks, parent = forks + 1, parent.parent()
        return ("job", "zygote", "worker (forked)")[min(forks, 2)]
    if "daisy._subprocess_worker" in command or "blockwise.worker" in command:
        return f"worker {worker_step(process)}"
    return command.split(" -m ")[-1].split()[0] if " -m " in command else "other"


def worker_step(process: psutil.Process) -> str:
    """The daisy task a worker serves (its DAISY_CONTEXT), or ``?``."""
    context = process.environ().get("DAISY_CONTEXT", "")
    for part in context.replace(";", ":").replace(",", ":").split(":"):
        key, _, value = part.partition("=")
        if key.strip() == "task_id":
            return value.strip()
    return "?"


class Sampler:
    """Calls ``sample()`` every ``interval`` seconds, in a thread, while a ``with`` block
    runs."""

    interval = INTERVAL

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        raise NotImplementedError


class TreeMemory(Sampler):
    """Peaks per role (of one process, of the role's processes at once, how many were alive
    at once) and of the whole tree, sampled every ``INTERVAL`` s in a thread. PSS and USS
    (``full``) read each process's page map: tens of ms of CPU per sample for a tree of
    1 GB workers, which slows what is measured; without them only RSS is sampled."""

    def __init__(self, pid: int, full: bool = True):
        super().__init__()
        self.root = psutil.Process(pid)
        self.full = full
        self.kinds = KINDS if full else ("rss",)
        self.roles: dict[int, str] = {}
        self.one = defaultdict(lambda: dict.fromkeys(KINDS, 0))
        self.together = defaultdict(lambda: dict.fromkeys(KINDS, 0))
        self.alive = defaultdict(int)
        self.tree = dict.fromkeys(KINDS, 0)
        #: role: (processes, PSS) when the tree's PSS peaked
        self.at_peak: dict[str, tuple[int, int]] = {}
        self.samples = 0

    def sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        sums, counts, tree = defaultdict(lambda: dict.fromkeys(KINDS, 0)), defaultdict(int), \
            dict.fromkeys(KINDS, 0)
        for process in processes:
            try:
                if process.pid not in self.roles:
                    self.roles[process.pid] = role(process, self.root)
                info = process.memory_full_info() if self.full else process.memory_info()
            except psutil.Error:
                continue
            name = self.roles[process.pid]
            counts[name] += 1
            for kind in self.kinds:
                value = getattr(info, kind)
                self.one[name][kind] = max(self.one[name][kind], value)
                sums[name][kind] += value
                tree[kind] += value
        for name, values in sums.items():
            self.alive[name] = max(self.alive[name], counts[name])
            for kind in KINDS:
                self.together[name][kind] = max(self.together[name][kind], values[kind])
        peak_kind = "pss" if self.full else "rss"
        if tree[peak_kind] > self.tree[peak_kind]:
            self.at_peak = {name: (counts[name], values[peak_kind])
                            for name, values in sums.items()}
        for kind in KINDS:
            self.tree[kind] = max(self.tree[kind], tree[kind])
        self.samples += 1

    def summary(self) -> dict:
        """GB: ``roles`` {name: {alive, one: {rss, pss, uss}, together: {...}}}, ``tree``."""
        def gb(values):
            return {k: round(v / 1e9, 3) for k, v in values.items()}

        return {"roles": {name: {"alive": self.alive[name], "one": gb(self.one[name]),
                                 "together": gb(self.together[name])}
                          for name in sorted(self.one)},
                "tree": gb(self.tree), "samples": self.samples, "full": self.full,
                "at_tree_peak": {name: [n, round(pss / 1e9, 3)]
                                 for name, (n, pss) in self.at_peak.items()}}


def print_roles(summary: dict) -> None:
    """One line per role: at most alive at once, peak of one process, peak of them at once."""
    print("| role | alive at once | one process RSS / PSS / USS GB | "
          "all of the role at once PSS GB |\n|---|---|---|---|")
    for name, values in summary["roles"].items():
        one = values["one"]
        print(f"| {name} | {values['alive']} | {one['rss']:.2f} / {one['pss']:.2f} / "
              f"{one['uss']:.2f} | {values['together']['pss']:.2f} |")
    tree = summary["tree"]
    print(f"| tree | | {tree['rss']:.2f} / {tree['pss']:.2f} / {tree['uss']:.2f} | |")
    print("at the tree's peak PSS: " + ", ".join(
        f"{name} {n} x = {pss:.2f} GB" for name, (n, pss) in summary["at_tree_peak"].items()))


if __name__ == "__main__":
    process = subprocess.Popen(sys.argv[1:])
    with TreeMemory(process.pid) as memory:
        process.wait()
    print_roles(memory.summary())
    print(json.dumps(memory.summary()))
