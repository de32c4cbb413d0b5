"""Where a run computes: torch device names from configs and the command line, checked in one place,
and the cores a process (and torch) is pinned to, so that training and benchmark figures are per that
many cores (``pinned`` restores the affinity and torch's thread count afterwards).

Runs started side by side on one machine each claim their cores with an advisory lock file per core
(``claim_cores``), so that two one-thread trainings take one core each instead of both pinning
themselves to the first core and sharing it at half speed.
"""

from __future__ import annotations

import fcntl
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import torch


def parse_device(name: str) -> torch.device:
    """The torch device called ``name``; ValueError says why it cannot be used here."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} is not available here (torch {torch.__version__}); allowed: cpu")
    return dev


def available_cores() -> list[int]:
    """The cores this process may run on (all of them where affinity is not supported)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _try_lock(core: int, lock_dir: Path) -> IO[str] | None:
    """The open lock file of ``core`` if no other process holds it, else None."""
    try:
        f = open(lock_dir / f"core-{core}.lock", "a")  # noqa: SIM115 - held open while the core is claimed
    except OSError:  # unwritable lock dir: treat the core as claimed rather than fail the run
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def claim_cores(cores: list[int], n: int, stack: ExitStack, lock_dir: Path | None = None) -> list[int]:
    """``n`` of ``cores``, those no other running process has claimed first; the claims last as long
    as ``stack``. Where fewer are free, the rest are the lowest claimed ones (shared, never refused)."""
    if lock_dir is None:  # per user: another user's lock files are not ours to open
        lock_dir = Path(tempfile.gettempdir()) / f"marl-cores-{os.getuid()}"
    try:
        lock_dir.mkdir(exist_ok=True)
    except OSError:
        return cores[:n]
    free = []
    for core in cores:
        if len(free) == n:
            break
        f = _try_lock(core, lock_dir)
        if f is not None:
            stack.callback(f.close)  # closing the file releases the lock
            free.append(core)
    shared = [c for c in cores if c not in free][: n - len(free)]
    return sorted(free + shared)


@contextmanager
def pinned(threads: int, torch_threads: int | None = None) -> Iterator[list[int]]:
    """Pin this process to ``threads`` cores (free ones first, see ``claim_cores``) and torch to
    ``torch_threads`` threads (default as many); restore both afterwards."""
    cores = available_cores()
    if threads > len(cores):
        raise ValueError(f"threads={threads} exceeds the {len(cores)} cores available to this process")
    old_threads = torch.get_num_threads()
    can_pin = hasattr(os, "sched_setaffinity")
    old_affinity = os.sched_getaffinity(0) if can_pin else None
    stack = ExitStack()
    use = claim_cores(cores, threads, stack) if threads < len(cores) else cores
    try:
        if can_pin:
            os.sched_setaffinity(0, use)
        torch.set_num_threads(torch_threads or threads)
        yield use
    finally:
        torch.set_num_threads(old_threads)
        if can_pin and old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
        stack.close()
