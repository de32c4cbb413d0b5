"""The export pipeline behind ``marl export``: policy -> compressed weights -> C (+ ONNX) -> verified report.

    from deploy.export import export_policy
    report = export_policy(out="runs/export", method="jlcm", bits=3, target="cortex-m4", preset_seed=0)

Steps: load the policy (a run directory / checkpoint via agents.load_policy_checkpoint, or the untrained
``deployable`` attention preset from a seed), refuse unsupported layers by name, record calibration
states (the policy's own closed-loop rollouts, seed 1000 + seed) and 1,000 test states (the same way,
seed 2000 + seed: other episodes), compress,
generate policy.c / policy.h / controller_policy.c, build on the host with sanitizers and compare with
the dequantised torch actor, optionally cross-build for the Cortex-M4F and run it under QEMU, and
write report.json and report.md. deploy/ never imports marl/: checkpoints describe their policy, so
agents/ rebuilds it, and envs.evaluation flies the closed-loop checks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deploy import verify
from deploy.calibration import (
    GATED_ROUNDS,
    NUM_CALIB_STATES,
    NUM_TEST_STATES,
    calibration_states,
    load_actor,
    load_states,
    record_states,
)
from deploy.closed_loop import DEFAULT_METHODS, closed_loop_markdown, closed_loop_report
from deploy.crazyflie import CONTROLLER_C
from deploy.export_c import check_supported, generate_c
from deploy.quantize import CALIBRATED, check_method_bits, quantize_actor
from deploy.selection import SELECT_EPISODES, choose_compression
from envs.config import SwarmConfig

TARGETS = ("host", "cortex-m4")
GOLDEN = 4


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def write_report_md(report: dict[str, Any], path: Path) -> None:
    """A human-readable report: summary, per-layer storage, method notes."""
    keys = ["method", "bits", "target", "weight_bytes", "float32_weight_bytes", "bits_per_weight", "param_bytes",
            "float32_param_bytes", "bits_per_param", "max_abs_action_error", "mean_abs_action_error",
            "c_vs_torch_max_abs_diff", "qemu_vs_host_max_abs_diff", "self_test", "flash_bytes", "ram_bytes", "macs",
            "instructions_per_inference", "est_inference_ms_168mhz", "onnx_vs_torch_max_abs_diff"]
    own = "".join(f", {name} {spec}" for name, spec in report.get("network_methods", {}).items())
    lines = [f"# Policy export: {report['method']} {report['bits']}-bit{own}, target {report['target']}", "",
             "| key | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(report[k])} |" for k in keys if k in report and report[k] is not None]
    lines += ["", "## Storage per layer (bytes)", "",
              "| layer | weights | index bits | indices | codebooks | scales | grouping | bias | bits/weight |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, st in report["layers"].items():
        lines.append(f"| {name} | {st['weights']} | {st.get('index_bits', '')} | {st['indices']} | {st['codebooks']} | "
                     f"{st['scales']} | {st['grouping']} | {st['bias']} | {st['bits_per_weight']:.2f} |")
    lines += ["", "Notes:", "",
              "- weight_bytes: the Linear weight matrices as stored (indices, codebooks, scales, group ids);",
              "  param_bytes adds the float32 biases and LayerNorm parameters.",
              "- max_abs_action_error: compressed vs float torch actor, clamped actions, over "
              f"{report['test_states']} test states recorded from {report.get('states_from', 'rollouts')}; "
              "c_vs_torch: C vs the dequantised torch actor.",
              f"- latency: {report.get('latency_method', '')}",
              f"- flash/RAM: {report.get('size_method', '')}"]
    if report.get("closed_loop"):
        backends = tuple(k[len("success_"):] for k in report["closed_loop"][0] if k.startswith("success_")
                         and not k.startswith("success_change"))
        lines += ["", "## Closed loop (dequantised torch actors)", "",
                  closed_loop_markdown(report["closed_loop"], backends)]
    path.write_text("\n".join(lines) + "\n")


def export_policy(
    out: str | Path,
    method: str = "jlcm",
    bits: int | None = None,
    target: str = "host",
    run: str | None = None,
    preset: str | None = "deployable",
    seed: int = 0,
    onnx: bool = False,
    calib: str | None = "rollout",
    calib_rounds: int | None = None,
    candidates: int = 1,
    select_cfgs: list[SwarmConfig] | None = None,
    select_episodes: int = SELECT_EPISODES,
    jlcm_kwargs: dict[str, Any] | None = None,
    network_methods: dict[str, str] | None = None,
    closed_loop: int = 0,
    closed_loop_backends: tuple[str, ...] = ("sim", "pybullet"),
    closed_loop_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a policy and verify it; writes policy.c, policy.h, controller_policy.c, report.json, report.md.

    calib: ``rollout`` (record states from the policy's own closed-loop rollouts: the float actor's
    clamped mean actions, the distribution the deployed policy sees), ``pid`` (rollouts of the built-in
    PID controller, as before), a .npy / .pt file of states [N, D], or ``none`` (jlcm, gptq and kmeans_w then
    refuse). calib_rounds: rounds of closed-loop calibration (deploy.calibration.calibrate_in_closed_loop: the
    compressed actor's own flights added to the calibration states; None: 4 for an actor with gated networks
    under a calibrated method, where one round of its float flights leaves its compressed copy touching
    columns (docs/deploy.md), else 0). candidates: compressions from independent calibration draws to choose
    among by their flights (deploy.selection.choose_compression: the fewest failed drones on selection maps
    of each of ``select_cfgs``, with None of the policy's own environment, ``select_episodes`` episodes each;
    1 = no selection, no flights); report.json ``selection`` logs each. jlcm_kwargs: settings of jlcm
    (deploy.jlcm.JLCMConfig) or, for the other methods, deploy.gptq.CalibratedConfig (e.g. ``allocate`` /
    ``tune_float`` for gptq). network_methods: a gated actor's networks by name -> ``"method[:bits]"`` of their
    own (e.g. ``{"near": "int8"}``; deploy.quantize.quantize_networks).
    The test states of the fidelity figures are recorded from other episodes of the policy's own
    rollouts (of the PID controller with ``pid``). closed_loop: episodes per method and backend of the closed-loop check
    (deploy/closed_loop.py: float32, int8, int4, kmeans 3, jlcm 3 and the exported method, dequantised
    torch actors flown with marl.evaluate on the policy's environment; 0 = skip), stored as
    ``closed_loop`` (a list of rows); closed_loop_kwargs go to evaluate_policy (e.g. episode_seconds).
    Returns the report dict (the keys of report.json).
    """
    t0 = time.perf_counter()
    bits = check_method_bits(method, bits)
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is unknown; allowed: {', '.join(TARGETS)}")
    actor, cfg = load_actor(run, preset, seed)
    check_supported(actor)
    obs_dim = actor.encoder.layout.dim if hasattr(actor.encoder, "layout") else None
    flyer = None if calib == "pid" else actor  # who flies the rollouts the states are recorded from
    if calib_rounds is None:
        calib_rounds = GATED_ROUNDS if hasattr(actor, "gates") and method in CALIBRATED else 0
    if calib_rounds < 0:
        raise ValueError(f"calib_rounds={calib_rounds} must be >= 0 (rounds of closed-loop calibration)")
    if candidates < 1 or (candidates > 1 and (method not in CALIBRATED or calib not in ("rollout", "pid"))):
        raise ValueError(f"candidates={candidates} must be 1, or > 1 with a calibrated method (jlcm, gptq, "
                         f"kmeans_w) and --calib rollout or pid (each candidate draws its own states); got "
                         f"method {method!r}, calib {calib!r}")
    if calib in (None, "none"):
        calib_states = None
    elif calib in ("rollout", "pid"):
        calib_states = calibration_states(cfg, NUM_CALIB_STATES, seed=1000 + seed, policy=flyer)
    else:
        calib_states = load_states(calib, obs_dim)
    if method in CALIBRATED and calib_states is None:
        raise ValueError(f"method {method!r} needs calibration states: use --calib rollout or --calib FILE, not none")
    test = record_states(cfg, NUM_TEST_STATES, seed=2000 + seed, policy=flyer)
    selection: dict[str, Any] = {}
    if method in CALIBRATED:  # one candidate: calibrate_in_closed_loop's compression (quantize_actor's at 0 rounds)
        q, calib_states, selection = choose_compression(
            actor, cfg, method, bits, calib_states, candidates, calib_rounds, calib_seed=1000 + seed,
            round_seed=1100 + seed, flyer=flyer, select_cfgs=select_cfgs, episodes=select_episodes,
            network_methods=network_methods, **(jlcm_kwargs or {}))
    else:
        q = quantize_actor(actor, method, bits, calib=calib_states, network_methods=network_methods,
                           **(jlcm_kwargs or {}))
    deq = q.dequantized(actor)
    with torch.no_grad():
        ref_float = actor(test).clamp(-1, 1)
        ref_q = deq(test).clamp(-1, 1)
    err = (ref_q - ref_float).abs()
    hover = 2.0 / cfg.dynamics.thrust_to_weight - 1.0

    outdir = Path(out)
    build = outdir / "build"
    build.mkdir(parents=True, exist_ok=True)
    files, stats = generate_c(actor, q, test[:GOLDEN], ref_q[:GOLDEN], fallback_action=hover)
    for name, text in files.items():
        (outdir / name).write_text(text)
        (build / name).write_text(text)
    (outdir / "controller_policy.c").write_text(CONTROLLER_C)

    states_np = test.numpy()
    host_out, host_st = verify.run_host(build, states_np)
    acc = q.accounting()
    report: dict[str, Any] = {
        "method": method, "bits": bits, "network_methods": network_methods or {},
        "target": target, "policy": run or f"{preset} (seed {seed})",
        "weight_bytes": acc["weight_bytes"], "float32_weight_bytes": acc["float32_weight_bytes"],
        "bits_per_weight": acc["bits_per_weight"], "param_bytes": acc["param_bytes"],
        "float32_param_bytes": acc["float32_param_bytes"], "bits_per_param": acc["bits_per_param"],
        "num_weights": acc["num_weights"], "num_params": acc["num_params"],
        "max_abs_action_error": float(err.max()), "mean_abs_action_error": float(err.mean()),
        "c_vs_torch_max_abs_diff": float(np.abs(host_out - ref_q.numpy()).max()),
        "self_test": "pass" if host_st == 0 else f"fail ({host_st})",
        "macs": stats["macs"], "test_states": len(test),
        "calib_states": None if calib_states is None else len(calib_states), "calib_rounds": calib_rounds,
        "candidates": candidates, "selection": selection,
        "states_from": "PID rollouts" if flyer is None else "policy rollouts",
    }
    try:
        sizes = verify.arm_sizes(build)
        m4_out, m4_st, insns = verify.run_qemu(build, states_np)
        report.update(
            flash_bytes=sizes["flash_bytes"], ram_bytes=sizes["ram_bytes"], arm_sizes=sizes,
            instructions_per_inference=insns, est_inference_ms_168mhz=verify.est_ms(insns),
            latency_method=(f"guest instructions per inference counted by QEMU -icount shift=0 with SysTick "
                            f"({verify.INSNS_PER_TICK} instructions per tick, {verify.TIMED_RUNS} runs) x assumed "
                            f"CPI {verify.CYCLES_PER_INSTRUCTION} / 168 MHz"),
            size_method=f"arm-none-eabi-size of policy.c at {verify.ARM_OPT} (flash = text + rodata + data; "
                        "RAM = data + bss + stack of policy_forward and its deepest callee); libm not included",
        )
        if target == "cortex-m4":
            report["qemu_vs_host_max_abs_diff"] = float(np.abs(m4_out - host_out).max())
            report["qemu_self_test"] = "pass" if m4_st == 0 else f"fail ({m4_st})"
    except RuntimeError:
        if target == "cortex-m4":
            raise
        report.update(flash_bytes=None, ram_bytes=None, est_inference_ms_168mhz=None,
                      latency_method="ARM toolchain / QEMU not installed", size_method="not measured")
    if onnx:
        from deploy.onnx_export import export_onnx  # onnx and onnxruntime are imported only for --onnx

        report["onnx_vs_torch_max_abs_diff"] = export_onnx(actor, test, outdir / "policy.onnx")
    if closed_loop > 0:
        methods = list(DEFAULT_METHODS)
        if (method, bits) not in methods:
            methods.append((method, bits))
        if calib_states is None:
            methods = [m for m in methods if m[0] not in CALIBRATED]
        report["closed_loop"] = closed_loop_report(
            actor, cfg, methods, episodes=closed_loop, backends=closed_loop_backends, calib=calib_states, test=test,
            seed=seed, jlcm_kwargs=jlcm_kwargs if method == "jlcm" else None, precomputed={(method, bits): q},
            **(closed_loop_kwargs or {}),
        )
    report["layers"] = acc["layers"]
    report["quantizer"] = q.info
    report["wall_s"] = time.perf_counter() - t0
    (outdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    write_report_md(report, outdir / "report.md")
    return report
