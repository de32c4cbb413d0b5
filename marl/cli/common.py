"""What the command modules share: JSON output and run directories named by path or by name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RUNS = Path("runs")


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON (non-JSON values as strings)."""
    print(json.dumps(obj, indent=2, default=str))


def run_path(run: str) -> Path:
    """A run directory given as a path, or as a name under runs/."""
    path = Path(run)
    if path.is_dir() or "/" in run or os.sep in run:
        return path
    return RUNS / run
