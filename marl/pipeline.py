"""The README's main job as one list of ``marl`` commands: ``marl run`` (what ``make run`` calls).

    marl run                     # demo, train quickstart, eval (sim + PyBullet, video), obstacle flight
                                 # (zoo:swarm8_obstacles next to pid_avoid in PyBullet, video), export, bench
    marl run --quick --out tmp   # the same commands at tiny budgets (what tests/test_pipeline.py runs)

``main_job(out, quick)`` is the one list of steps, so the Makefile and the test cannot drift apart. Each
step runs as its own ``marl`` process, as a user would type it, with the paths exactly as given (relative
ones stay relative). The figures of the steps that print JSON are kept under ``OUT/pipeline/`` and the
run ends with one short summary of the whole pipeline (also written to ``OUT/pipeline/summary.json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_NAME = "quickstart"  # the run directory under --out
CONFIG = "quickstart_finetune"  # imitation of pid_avoid, then PPO with a BC term near the goal: ~2 cm in both backends
# Obstacle flight a newcomer sees in minutes: the shipped obstacle policy beside the controller it is measured
# against, in PyBullet on the same maps (one seed: the maps, starts and goals do not depend on the policy).
OBSTACLE_POLICIES = ("pid_avoid", "zoo:swarm8_obstacles")
OBSTACLE_TASK = ("--scenario", "o_random", "--drones", "8", "--density", "0.2")
OBSTACLE_SEED = 2000  # the held-out PyBullet seed of the zoo's evaluations
OBSTACLES = "obstacles"  # their directory under --out


@dataclass(frozen=True)
class Step:
    """One ``marl`` command of the pipeline; ``json_out``: its stdout is one JSON object, kept."""

    name: str
    argv: tuple[str, ...]
    json_out: bool = False


class PipelineError(RuntimeError):
    """A step exited with a non-zero status."""


def main_job(out: str | Path = "runs", quick: bool = False) -> list[Step]:
    """The steps of the main job writing under ``out``; ``quick`` scales every budget down to seconds."""
    out = Path(out)
    run = out / RUN_NAME
    export = run / "export"
    episodes_sim, episodes_pyb, closed_loop = (4, 2, 2) if quick else (64, 20, 20)
    short = ("--episode-seconds", "2") if quick else ()
    # --quick: one round of behaviour cloning on 4 swarms and one critic-only update (no actor update)
    train_budget = ("--steps", "32768", "pretrain.iterations=0", "pretrain.num_envs=4", "pretrain.fit_steps=20") \
        if quick else ()
    bench = ("--envs", "64", "--steps", "10") if quick else ("--envs", "1024", "--steps", "100")
    return [
        Step("demo", ("demo", "--out", str(out / "demo"), *(("--quick",) if quick else ())), json_out=True),
        Step("train", ("train", CONFIG, "--run-dir", str(run), "--overwrite", "--no-progress", *train_budget),
             json_out=True),
        Step("plot", ("plot", str(run))),
        Step("eval_sim", ("eval", str(run), "--episodes", str(episodes_sim), *short, "--json"), json_out=True),
        Step("eval_pybullet", ("eval", str(run), "--backend", "pybullet", "--episodes", str(episodes_pyb), *short,
                               "--video", str(run / "episode.mp4"), "--json"), json_out=True),
        *(Step(_obstacle_step(policy), ("eval", policy, "--backend", "pybullet", *OBSTACLE_TASK, "--seed",
                                        str(OBSTACLE_SEED), "--episodes", str(episodes_pyb), *short,
                                        "--video", str(_obstacle_video(out, policy)), "--json"), json_out=True)
          for policy in OBSTACLE_POLICIES),
        Step("export", ("export", str(run), "--method", "jlcm", "--bits", "3", "--target", "cortex-m4", "--out",
                        str(export), "--onnx", "--closed-loop", str(closed_loop), "--json"), json_out=True),
        Step("bench_sim", ("bench", "sim", "--drones", "8", *bench, "--density", "0.2", "--json"), json_out=True),
    ]


def _obstacle_step(policy: str) -> str:
    """The step name of ``policy``'s obstacle flight: obstacles_pid_avoid, obstacles_zoo_swarm8_obstacles."""
    return "obstacles_" + policy.replace(":", "_")


def _obstacle_video(out: Path, policy: str) -> Path:
    return out / OBSTACLES / f"{policy.replace(':', '_')}.mp4"


def run_pipeline(out: str | Path = "runs", quick: bool = False) -> dict[str, Any]:
    """Run every step of ``main_job`` in order, stop at the first failure, return and print the summary."""
    out = Path(out)
    keep = out / "pipeline"
    keep.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in main_job(out, quick):
        cmd = [sys.executable, "-m", "marl", *step.argv]
        print(f"\n== marl {' '.join(step.argv)}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if step.json_out else None, text=True)
        seconds[step.name] = time.perf_counter() - t
        if proc.returncode != 0:
            raise PipelineError(f"step {step.name!r} failed with status {proc.returncode}: marl {' '.join(step.argv)}")
        if step.json_out:
            text, results[step.name] = _split_json(proc.stdout, step)
            print(text, end="", flush=True)
            (keep / f"{step.name}.json").write_text(json.dumps(results[step.name], indent=2) + "\n")
    summary = summarize(results, out, seconds, time.perf_counter() - t0)
    (keep / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + format_summary(summary), flush=True)
    return summary


def _split_json(stdout: str, step: Step) -> tuple[str, Any]:
    """A step's stdout as (the lines before its JSON object, the object); the object starts at a line "{"."""
    lines = stdout.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip() == "{"]
    if not starts:
        raise PipelineError(f"step {step.name!r} printed no JSON object: marl {' '.join(step.argv)}")
    return "".join(lines[: starts[-1]]), json.loads("".join(lines[starts[-1]:]))


def summarize(results: dict[str, Any], out: Path, seconds: dict[str, float], wall_s: float) -> dict[str, Any]:
    """The headline figures of the steps' JSON outputs, and where the files went."""
    train, sim, pyb, exp = results["train"], results["eval_sim"], results["eval_pybullet"], results["export"]
    jlcm = next((r for r in exp.get("closed_loop", []) if r["method"] == exp["method"] and r["bits"] == exp["bits"]),
                {})
    run = out / RUN_NAME
    return {
        "wall_s": wall_s,
        "step_seconds": seconds,
        "train": {"wall_s": train["wall_s"], "agent_steps": train["agent_steps"],
                  # the run's own final evaluation (train.eval_episodes); training may end before any episode does
                  "success_rate": train.get("eval", {}).get("success_rate", train["best_success_rate"])},
        "sim": _flight(sim),
        "pybullet": _flight(pyb),
        "export": {
            "method": exp["method"], "bits": exp["bits"], "weight_bytes": exp["weight_bytes"],
            "float32_weight_bytes": exp["float32_weight_bytes"], "flash_bytes": exp.get("flash_bytes"),
            "max_abs_action_error": exp["max_abs_action_error"],
            "c_vs_torch_max_abs_diff": exp["c_vs_torch_max_abs_diff"],
            "qemu_vs_host_max_abs_diff": exp.get("qemu_vs_host_max_abs_diff"),
            "est_inference_ms_168mhz": exp.get("est_inference_ms_168mhz"),
            "instructions_per_inference": exp.get("instructions_per_inference"),
            "closed_loop_success": {b: jlcm.get(f"success_{b}") for b in ("sim", "pybullet")},
        },
        "obstacles": {
            "backend": "pybullet", "scenario": "o_random", "drones": 8, "density": 0.2, "seed": OBSTACLE_SEED,
            "policies": {p: _flight(results[_obstacle_step(p)], OBSTACLE_KEYS) for p in OBSTACLE_POLICIES},
        },
        "bench_agent_steps_per_s": results["bench_sim"]["agent_steps_per_s"],
        "files": {
            "demo": str(out / "demo" / "topdown.png"), "plots": str(run / "plots"), "video": str(run / "episode.mp4"),
            **{f"video {p}": str(_obstacle_video(out, p)) for p in OBSTACLE_POLICIES},
            "report": str(run / "export" / "report.md"), "c_source": str(run / "export" / "policy.c"),
        },
    }


FLIGHT_KEYS = ("episodes", "success_rate", "distance_to_goal_1s", "collision_rate")
OBSTACLE_KEYS = (*FLIGHT_KEYS, "obstacle_collision_rate", "time_to_goal")


def _flight(report: dict[str, Any], keys: tuple[str, ...] = FLIGHT_KEYS) -> dict[str, Any]:
    return {k: report[k] for k in keys if k in report}


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a dozen lines a newcomer can read at a glance."""
    tr, ex = s["train"], s["export"]

    def flight(name: str) -> str:
        f = s[name]
        return (f"success {f['success_rate']:.2f}, distance to goal (last 1 s) {f['distance_to_goal_1s']:.3f} m, "
                f"collisions {f['collision_rate']:.2f} ({f['episodes']} episodes)")

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    cl = ex["closed_loop_success"]
    lines = [
        f"marl run: the main job took {s['wall_s']:.0f} s",
        f"  train {CONFIG}  {tr['agent_steps']:,} agent steps in {tr['wall_s']:.0f} s (warm start included), "
        f"success {num(tr['success_rate'], '.2f')}",
        f"  simulator          {flight('sim')}",
        f"  PyBullet           {flight('pybullet')}",
        f"  obstacle flight    PyBullet, o_random, 8 drones, density 0.2, seed {s['obstacles']['seed']}:",
        *(f"    {p:<22} success {f['success_rate']:.2f}, obstacle collisions {f['obstacle_collision_rate']:.2f}, "
          f"distance to goal (last 1 s) {f['distance_to_goal_1s']:.3f} m, time to goal "
          f"{num(f.get('time_to_goal'), '.1f')} s ({f['episodes']} episodes)"
          for p, f in s["obstacles"]["policies"].items()),
        f"  export             {ex['method'].upper()} {ex['bits']}-bit: {ex['weight_bytes']:,} weight bytes vs "
        f"{ex['float32_weight_bytes']:,} float32 ({ex['float32_weight_bytes'] / ex['weight_bytes']:.1f}x smaller), "
        f"max action error {ex['max_abs_action_error']:.3f}",
        f"  compressed flight  success sim {num(cl['sim'], '.2f')}, PyBullet {num(cl['pybullet'], '.2f')}",
        f"  C vs torch         {ex['c_vs_torch_max_abs_diff']:.1e} max abs; QEMU vs host "
        f"{num(ex['qemu_vs_host_max_abs_diff'], '.1e')}",
        f"  Cortex-M4          {num(ex['est_inference_ms_168mhz'], '.2f')} ms per inference at 168 MHz (estimated), "
        f"flash {num(ex['flash_bytes'], ',')} bytes",
        f"  simulator speed    {s['bench_agent_steps_per_s']:,.0f} agent-steps/s (1 core, 8 drones)",
    ]
    lines += [f"  {k:<18} {v}" for k, v in s["files"].items()]
    return "\n".join(lines)
