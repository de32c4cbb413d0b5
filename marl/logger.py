"""Run outputs: metrics.jsonl (one JSON object per update), TensorBoard scalars and a live progress bar.

metrics.jsonl is the record that plots and the resume test read. On resume it is cut back to the
updates the checkpoint holds (a kill between writing a line and writing the checkpoint would
otherwise leave a line that the resumed run writes again), and TensorBoard's ``purge_step`` drops
the same updates from the event files.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

# Keys whose values depend on the machine's speed, not on the run's numbers (ignored when comparing runs).
TIMING_KEYS = ("wall_s", "agent_steps_per_s", "rollout_s", "update_s", "eta_s")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line, from a kill mid-write, is skipped)."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(path: str | Path, last_update: int) -> None:
    """Keep only the records of updates <= last_update (atomically)."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [r for r in read_metrics(path) if int(r.get("update", 0)) <= last_update]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
    tmp.replace(path)


class RunLogger:
    """Appends metrics to metrics.jsonl and TensorBoard; shows progress on a terminal (or a line now and then)."""

    def __init__(
        self, run_dir: str | Path, total_steps: int, tensorboard: bool = True, progress: bool = True,
        first_update: int = 0, start_steps: int = 0,
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.file = open(self.path, "a")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported here: slow, and optional

            # purge_step drops events of updates after the checkpoint that a resume repeats.
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=first_update + 1 if first_update else None)
        self.total_steps = total_steps
        self.progress = None
        self.task = None
        self._last_print = 0.0
        self.show = progress
        if progress and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            # Times before the text, so that a narrow terminal cuts the text rather than the ETA.
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(bar_width=12), TextColumn("{task.percentage:>5.1f}%"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self.task = self.progress.add_task("train", total=total_steps, completed=start_steps, info="")
            self.progress.start()

    def log(self, record: dict[str, Any]) -> None:
        """Write one update's record (flushed, so a kill loses at most the line being written)."""
        record = {k: _clean(v) for k, v in record.items()}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            step = int(record["update"])
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "update":
                    self.writer.add_scalar(key, value, step)
        self._show(record)

    def _show(self, r: dict[str, Any]) -> None:
        fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        info = (
            f"{fmt(r.get('agent_steps_per_s'), ',.0f')} agent-steps/s  return {fmt(r.get('episode_return'), '.2f')}"
            f"  success {fmt(r.get('success_rate'), '.2f')}"
        )
        if self.progress is not None:  # compact: the bar shares an 80-column terminal with the times
            sps = r.get("agent_steps_per_s")
            sps = None if sps is None else sps / 1e3
            info = (
                f"{fmt(sps, '.1f')}k steps/s  ret {fmt(r.get('episode_return'), '.1f')}"
                f"  succ {fmt(r.get('success_rate'), '.2f')}"
            )
        if self.progress is not None:
            self.progress.update(self.task, completed=r["agent_steps"], info=info)
        elif self.show and time.monotonic() - self._last_print > 10.0:
            self._last_print = time.monotonic()
            eta = r.get("eta_s")
            print(
                f"update {r['update']}  steps {r['agent_steps']:,}/{self.total_steps:,}  {info}"
                f"  wall {r['wall_s']:.0f}s  ETA {fmt(eta, '.0f')}s", file=sys.stderr, flush=True,
            )

    def close(self) -> None:
        """Flush and close everything."""
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()
        self.file.close()
