"""Torch device names from configs and the command line, checked in one place."""

from __future__ import annotations

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
