"""``marl bench policies``: policies side by side on the field's obstacle task.

    result = bench_policies(("pid", "pid_avoid", "sbc"), densities=(0.2, 0.4, 0.6, 0.8), episodes=32)
    print(markdown_table(result))

A full grid of backends x drone counts x obstacle sizes x densities x policies. Every policy flies
the same episodes: marl.evaluate.evaluate runs the N episodes of a cell side by side from one seed,
and the maps, starts and goals are drawn at reset before any action, so they depend on the seed and
the cell only, never on the policy. Each row holds the field's metrics (success, collisions by kind,
deadlock, distance to goal over the last second, time to goal). Policies are built-in controllers
(``pid``, ``pid_avoid``, ``sbc``), shipped zoo policies (``zoo:quickstart``) or training run
directories / checkpoint files (whatever marl.evaluate accepts).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marl.evaluate import BACKENDS, evaluate

METRICS = (
    "success_rate",
    "collision_rate",
    "neighbour_collision_rate",
    "obstacle_collision_rate",
    "floor_collision_rate",
    "wall_collision_rate",
    "deadlock_rate",
    "reached_goal_rate",
    "distance_to_goal_1s",
    "time_to_goal",
)
# (metric, column header) of the markdown table
_COLUMNS = (
    ("success_rate", "success"),
    ("neighbour_collision_rate", "nbr col"),
    ("obstacle_collision_rate", "obst col"),
    ("floor_collision_rate", "floor"),
    ("deadlock_rate", "deadlock"),
    ("distance_to_goal_1s", "dist 1 s (m)"),
    ("time_to_goal", "time to goal (s)"),
)


def _check(name: str, values: Sequence[Any], ok, allowed: str) -> None:
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if not ok(v):
            raise ValueError(f"{name}: {v!r} is not allowed; allowed: {allowed}")


def bench_policies(
    policies: Sequence[str] = ("pid", "pid_avoid", "sbc"),
    densities: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    drones: Sequence[int] = (8,),
    backends: Sequence[str] = ("sim",),
    obstacle_sizes: Sequence[float] = (0.6,),
    episodes: int = 32,
    seed: int = 0,
    scenario: str = "o_random",
    episode_seconds: float | None = None,
    layout: str | None = None,
    device: str = "cpu",
    progress: Any = None,
) -> dict[str, Any]:
    """Fly every policy on every cell of the grid; returns {"settings": ..., "rows": [...]}, JSON-ready.

    Each row: policy, backend, drones, obstacle_size, density, the mean of every metric of METRICS and
    success_rate_std (over episodes), and the cell's wall time. layout None keeps the config default
    (the reference layout). progress: an optional callable given each row as it is done.
    """
    _check("policies", policies, lambda p: isinstance(p, str) and p != "", "controller names, zoo:NAME or run paths")
    _check("densities", densities, lambda d: 0.0 <= d < 1.0, "0 <= density < 1")
    _check("drones", drones, lambda m: isinstance(m, int) and m >= 1, "integers >= 1")
    _check("backends", backends, lambda b: b in BACKENDS, ", ".join(BACKENDS))
    _check("obstacle_sizes", obstacle_sizes, lambda s: 0.0 < s < 1.0, "0 < size < cell size (1 m)")
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    overrides: dict[str, Any] = {} if layout is None else {"layout": layout}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for backend in backends:
        for m in drones:
            for size in obstacle_sizes:
                for density in densities:
                    for policy in policies:
                        report = evaluate(
                            policy, backend=backend, scenario=scenario, drones=m, episodes=episodes, seed=seed,
                            density=density, episode_seconds=episode_seconds, device=device,
                            obstacle_size=size, **overrides,
                        )
                        row = dict(policy=policy, backend=backend, drones=m, obstacle_size=size, density=density)
                        row.update({k: report[k] for k in METRICS})
                        row["success_rate_std"] = report["success_rate_std"]
                        row["wall_s"] = report["wall_s"]
                        rows.append(row)
                        if progress is not None:
                            progress(row)
    settings = dict(
        policies=list(policies), densities=list(densities), drones=list(drones), backends=list(backends),
        obstacle_sizes=list(obstacle_sizes), episodes=episodes, seed=seed, scenario=scenario,
        episode_seconds=episode_seconds, layout=layout or "reference", wall_s=time.perf_counter() - t0,
    )
    return {"settings": settings, "rows": rows}


def markdown_table(result: dict[str, Any]) -> str:
    """The rows of a bench_policies result as a markdown table."""
    head = ["policy", "backend", "drones", "size (m)", "density", *(h for _, h in _COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in result["rows"]:
        cells = [r["policy"], r["backend"], str(r["drones"]), f"{r['obstacle_size']:.2f}", f"{r['density']:.2f}"]
        cells += [f"{r[k]:.2f}" if k == "time_to_goal" else f"{r[k]:.3f}" for k, _ in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_policies(result: dict[str, Any], path: str | Path) -> str:
    """Success against density, a line per policy, a panel per (backend, drones, obstacle size); returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    policies = result["settings"]["policies"]
    colour = {p: f"C{i}" for i, p in enumerate(policies)}  # one colour per policy in every panel
    panels = sorted({(r["backend"], r["drones"], r["obstacle_size"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
    for ax, (backend, m, size) in zip(axes[0], panels, strict=True):
        panel = [r for r in rows if (r["backend"], r["drones"], r["obstacle_size"]) == (backend, m, size)]
        for policy in policies:
            pts = sorted((r["density"], r["success_rate"]) for r in panel if r["policy"] == policy)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=colour[policy],
                        label=Path(policy).name if "/" in policy else policy)
        ax.set_title(f"{backend}, {m} drones, {size:.2f} m columns", fontsize=9)
        ax.set_xlabel("obstacle density")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    episodes = result["settings"]["episodes"]
    axes[0][0].set_ylabel(f"success ({episodes} episodes)" if isinstance(episodes, int) else "success")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}  # every policy, whichever panel has it
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=8, loc="lower left")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return str(out)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from e


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from e


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``marl bench policies``."""
    p.add_argument("--policies", type=_names, default=["pid", "pid_avoid", "sbc"],
                   help="comma-separated controller names, zoo:NAME (marl zoo) or run directories "
                   "(default pid,pid_avoid,sbc)")
    p.add_argument("--densities", type=_floats, default=[0.2, 0.4, 0.6, 0.8], help="default 0.2,0.4,0.6,0.8")
    p.add_argument("--drones", type=_ints, default=[8], help="drone counts, default 8")
    p.add_argument("--backends", type=_names, default=["sim"], help=f"from {', '.join(BACKENDS)}; default sim")
    p.add_argument("--obstacle-sizes", type=_floats, default=[0.6], help="column diameters in m, default 0.6")
    p.add_argument("--episodes", type=int, default=32, help="episodes per cell (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", default="o_random")
    p.add_argument("--episode-seconds", type=float, default=None, help="default: the config's 15 s")
    p.add_argument("--layout", default=None, help="obstacle layout: reference (default) or rows")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON here")
    p.add_argument("--plot", default=None, metavar="PATH", help="write success against density (PNG) here")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark of parsed arguments, print the markdown table, write JSON and plot if asked."""
    def progress(r: dict[str, Any]) -> None:
        print(f"{r['policy']} {r['backend']} {r['drones']} drones size {r['obstacle_size']} density {r['density']}: "
              f"success {r['success_rate']:.3f} ({r['wall_s']:.0f} s)", flush=True)

    result = bench_policies(
        args.policies, args.densities, args.drones, args.backends, args.obstacle_sizes, args.episodes, args.seed,
        args.scenario, args.episode_seconds, args.layout, args.device, progress=progress,
    )
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_policies(result, args.plot)
    print(markdown_table(result))
    return 0
