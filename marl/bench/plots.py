"""Figures of the benchmark suites: the ppo suite's success curves per optimiser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_success_curves(result: dict[str, Any], path: str | Path) -> Path:
    """The ppo suite's success curves (success rate of the recent training episodes against agent steps):
    each seed thin, the mean over seeds bold, one colour per optimiser. Returns the written path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: the backend must be chosen before pyplot loads
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, r) in enumerate(result["optimizers"].items()):
        curves = [{s: v for s, v in c if v is not None} for c in r["success_curves"]]
        for c in curves:
            ax.plot(np.array(list(c)) / 1e6, list(c.values()), color=f"C{i}", alpha=0.3, lw=0.8)
        common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        ax.plot(np.array(common) / 1e6, [np.mean([c[s] for c in curves]) for s in common], color=f"C{i}", lw=2,
                label=f"{name} (mean of {len(curves)} seeds)")
    ax.set(xlabel="agent steps (millions)", ylabel="success rate, recent training episodes", ylim=(0, 1.02),
           title=f"PPO on {result['config']} by optimiser")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
