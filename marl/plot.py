"""Learning curves of a run from its metrics.jsonl: return, success and collision rates against agent steps."""

from __future__ import annotations

from pathlib import Path

from marl.logger import read_metrics

PANELS = {
    "return": (("episode_return", "episode return"),),
    "success": (("success_rate", "success"), ("reached_goal_rate", "reached goal")),
    "collisions": (
        ("collision_rate", "neighbour or obstacle"), ("neighbour_collision_rate", "neighbour"),
        ("obstacle_collision_rate", "obstacle"), ("floor_collision_rate", "floor"),
    ),
}


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write return.png, success.png, collisions.png and learning_curves.png (all three); returns the paths.

    Raises ValueError when the run has no metrics yet.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        raise ValueError(f"{run_dir}: no metrics.jsonl records to plot")
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)

    def draw(ax, panel: str) -> None:
        for key, label in PANELS[panel]:
            # Episode metrics change only when episodes finish; the records in between repeat them.
            pts = [(r["agent_steps"], r[key]) for r in records
                   if r.get(key) is not None and r.get("episodes_update", 1) > 0]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker=".", label=label)
        ax.set_xlabel("agent steps")
        ax.set_title(panel)
        ax.grid(alpha=0.3)
        if panel != "return":
            ax.set_ylim(-0.02, 1.02)
        if len(PANELS[panel]) > 1 and ax.get_legend_handles_labels()[0]:  # a task may report none of them
            ax.legend(fontsize=8)

    paths = []
    for panel in PANELS:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        draw(ax, panel)
        fig.tight_layout()
        paths.append(out / f"{panel}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, panel in zip(axes, PANELS, strict=True):
        draw(ax, panel)
    last = records[-1]
    fig.suptitle(f"{run_dir.name}: {last['agent_steps']:,} agent steps, {last['wall_s']:.0f} s")
    fig.tight_layout()
    paths.append(out / "learning_curves.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
