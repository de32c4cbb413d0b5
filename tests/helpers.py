"""Helpers shared by test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def strict_api_warnings() -> Iterator[None]:
    """API-test warnings as errors, except the one our unbounded observation Box must trigger."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Deliberate: positions, velocities and rates have no hard bound.
        warnings.filterwarnings("ignore", message=".*observation space value is .*infinity")
        yield
