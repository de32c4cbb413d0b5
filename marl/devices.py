"""Where a run computes: torch device names from configs and the command line, checked in one place,
and the cores a process (and torch) is pinned to, so that training and benchmark figures are per that
many cores (``pinned`` restores the affinity and torch's thread count afterwards)."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def pinned(threads: int) -> Iterator[list[int]]:
    """Pin this process to ``threads`` cores and torch to as many threads; restore both afterwards."""
    cores = available_cores()
    if threads > len(cores):
        raise ValueError(f"threads={threads} exceeds the {len(cores)} cores available to this process")
    old_threads = torch.get_num_threads()
    can_pin = hasattr(os, "sched_setaffinity")
    old_affinity = os.sched_getaffinity(0) if can_pin else None
    use = cores[:threads]
    try:
        if can_pin:
            os.sched_setaffinity(0, use)
        torch.set_num_threads(threads)
        yield use
    finally:
        torch.set_num_threads(old_threads)
        if can_pin and old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
