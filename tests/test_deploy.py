"""deploy/: compression accounting, JLCM fidelity, C export on the host (sanitizers) and the emulated
Cortex-M4F (QEMU), self-test, ONNX, the Crazyflie template, the ``marl export`` CLI and bad input.

The ARM toolchain and QEMU are required (``make setup`` installs them); these tests do not skip.
"""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
import torch
from conftest import actor_and_states
from torch import nn

from agents import make_policy
from deploy import verify
from deploy.calibration import default_env_config, record_states
from deploy.crazyflie import CONTROLLER_C, STUB_MAIN_C, STUBS_H
from deploy.export_c import check_supported, generate_c
from deploy.quantize import pack_bits, packed_bytes, quantize_actor, unpack_bits
from envs.observations import obs_spec


@pytest.fixture(scope="module")
def setup():
    """conftest.actor_and_states: the actor, calibration and 1000 test states."""
    return actor_and_states(1000)


def _export(actor, q, test, build):
    deq = q.dequantized(actor)
    with torch.no_grad():
        ref = deq(test).clamp(-1, 1)
    files, stats = generate_c(actor, q, test[:3], ref[:3], fallback_action=2 / 1.9 - 1)
    build.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (build / name).write_text(text)
    return ref.numpy(), stats


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_pack_roundtrip(bits):
    values = np.random.default_rng(bits).integers(0, 1 << bits, 101)
    packed = pack_bits(values, bits)
    assert packed.size == packed_bytes(101, bits)
    assert np.array_equal(unpack_bits(packed, bits, 101), values)


def _palette_bytes(out, inp, bits, groups, books=1):
    """Bytes of one palette layer as stored: packed indices, float16 codebooks and group scales, group ids."""
    grouping = math.ceil(out * math.ceil(math.log2(groups)) / 8) if groups > 1 else 0
    return math.ceil(out * inp * bits / 8) + 2 * books * (1 << bits) + 2 * groups + grouping


def test_bits_per_weight_accounting(setup):
    """Every byte is counted: each layer's own index width, codebooks, scales, group ids; the mixed
    widths stay within the uniform 3-bit layout's bytes, which is <= 1/8 of float32."""
    actor, calib, _ = setup
    q = quantize_actor(actor, "jlcm", 3, calib=calib, steps=5)
    acc = q.accounting()
    linears = [m for m in actor.modules() if isinstance(m, nn.Linear)]
    uniform = sum(_palette_bytes(m.out_features, m.in_features, 3, min(4, m.out_features)) for m in linears)
    assert q.info["uniform_bytes"] == q.info["budget_bytes"] == uniform
    expect = 0
    for name, layer in q.layers.items():
        out, inp = layer.shape
        assert layer.indices.max() < (1 << layer.bits) and layer.codebooks.shape == (1, 1 << layer.bits)
        assert acc["layers"][name]["index_bits"] == layer.bits == q.info["layer_bits"][name]
        expect += _palette_bytes(out, inp, layer.bits, layer.num_groups)
    assert acc["weight_bytes"] == expect <= uniform
    assert len({layer.bits for layer in q.layers.values()}) > 1  # mixed precision
    assert acc["num_weights"] == sum(m.weight.numel() for m in linears)
    assert acc["weight_bytes"] * 8 <= acc["float32_weight_bytes"]  # <= 1/8 of float32, codebooks included
    assert 3.0 < acc["bits_per_weight"] <= 8 * uniform / acc["num_weights"] < 4.0
    other = sum(m.bias.numel() for m in linears)
    other += sum(p.numel() for m in actor.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters())
    assert acc["param_bytes"] == acc["weight_bytes"] + 4 * other
    i8 = quantize_actor(actor, "int8").accounting()
    assert i8["weight_bytes"] == sum(m.weight.numel() + 4 * m.out_features for m in linears)
    # a tighter explicit budget is honoured too, and uniform widths reproduce the plain layout
    tight = quantize_actor(actor, "jlcm", 3, calib=calib, steps=0, budget_bits=2.5).accounting()
    assert tight["weight_bytes"] * 8 <= 2.5 * tight["num_weights"]
    flat = quantize_actor(actor, "jlcm", 3, calib=calib, steps=0, allocate=False).accounting()
    assert flat["weight_bytes"] == uniform


def test_jlcm_beats_kmeans_at_3_bits(setup):
    """On held-out states (other rollouts), mean and max action error, at no more bytes."""
    actor, calib, test = setup
    with torch.no_grad():
        ref = actor(test).clamp(-1, 1)
    errs, size = {}, {}
    for method in ("kmeans", "jlcm"):
        q = quantize_actor(actor, method, 3, calib=calib, steps=200)
        size[method] = q.accounting()["weight_bytes"]
        with torch.no_grad():
            errs[method] = (q.dequantized(actor)(test).clamp(-1, 1) - ref).abs()
    assert errs["jlcm"].mean() < 0.5 * errs["kmeans"].mean()
    assert errs["jlcm"].max() < 0.5 * errs["kmeans"].max()
    assert size["jlcm"] * 8 <= 4 * sum(m.weight.numel() for m in actor.modules() if isinstance(m, nn.Linear))


def test_jlcm_steps_never_increase_calibration_loss(setup):
    """GPTQ beats nearest-codeword mappings; the proximal mapping updates keep moves (each verified) and
    the kept state is never worse than the initialisation; the float32 parameters are re-learned."""
    actor, calib, _ = setup
    near = quantize_actor(actor, "jlcm", 3, calib=calib, steps=0, init="nearest")
    gptq = quantize_actor(actor, "jlcm", 3, calib=calib, steps=0)
    assert gptq.info["init_loss"] < near.info["init_loss"]
    q = quantize_actor(actor, "jlcm", 3, calib=calib, steps=50, map_every=10)
    assert q.info["init_loss"] == pytest.approx(gptq.info["init_loss"])
    assert q.info["best_loss"] < 0.8 * q.info["init_loss"]
    moves = q.info["mapping_moves"]
    assert moves["updates"] == 5 and 0 < moves["kept"] <= moves["tried"] <= 5 * 32
    assert set(q.overrides) == {"encoder.norm.weight", "encoder.norm.bias"}
    assert not torch.equal(q.layers["mean"].bias, actor.mean.bias.detach())
    deq = q.dequantized(actor)
    assert torch.equal(deq.encoder.norm.bias, q.overrides["encoder.norm.bias"])
    assert torch.equal(deq.mean.bias, q.layers["mean"].bias)
    fixed = quantize_actor(actor, "jlcm", 3, calib=calib, steps=5, tune_float=False)
    assert not fixed.overrides and torch.equal(fixed.layers["mean"].bias, actor.mean.bias.detach())


def test_c_matches_torch_on_host_and_qemu(setup, tmp_path):
    actor, calib, test = setup
    q = quantize_actor(actor, "jlcm", 3, calib=calib, steps=20)
    assert q.overrides and len({layer.bits for layer in q.layers.values()}) > 1  # re-learned LayerNorm, mixed widths
    ref, stats = _export(actor, q, test, tmp_path)
    host, st = verify.run_host(tmp_path, test.numpy())  # -Wall -Wextra -Werror, ASan + UBSan
    assert st == 0
    assert np.abs(host - ref).max() <= 1e-5
    m4, st_m4, insns = verify.run_qemu(tmp_path, test.numpy())
    assert st_m4 == 0
    assert np.abs(m4 - host).max() <= 1e-5
    assert np.abs(m4 - ref).max() <= 1e-5
    assert 40 * stats["macs"] > insns > stats["macs"]
    sizes = verify.arm_sizes(tmp_path)
    assert 0 < sizes["flash_bytes"] < 32_000 and 0 < sizes["ram_bytes"] < 8_000


@pytest.mark.parametrize("method,bits", [("float32", None), ("int8", None), ("int4", None), ("kmeans", 2),
                                         ("kmeans", 8)])
def test_c_matches_torch_every_format(setup, tmp_path, method, bits):
    actor, _, test = setup
    q = quantize_actor(actor, method, bits)
    ref, _ = _export(actor, q, test[:200], tmp_path)
    host, st = verify.run_host(tmp_path, test[:200].numpy())
    assert st == 0 and np.abs(host - ref).max() <= 1e-5


def test_c_every_palette_width_host_and_qemu(setup, tmp_path):
    """Mixed precision: one actor whose layers use every index width the C kernels decode (1-8 bits),
    through the 1-, 2- and 3-token kernels; C on the host and under QEMU vs torch."""
    from deploy.quantize import PALETTE_BITS, QuantizedActor, linear_layers, quantize_kmeans

    actor, _, test = setup
    layers = {n: quantize_kmeans(n, m, PALETTE_BITS[i % len(PALETTE_BITS)])
              for i, (n, m) in enumerate(linear_layers(actor).items())}
    assert {layer.bits for layer in layers.values()} == set(PALETTE_BITS)
    q = QuantizedActor("kmeans", 3, layers, 0)
    ref, _ = _export(actor, q, test[:200], tmp_path)
    host, st = verify.run_host(tmp_path, test[:200].numpy())
    assert st == 0 and np.abs(host - ref).max() <= 1e-5
    m4, st_m4, _ = verify.run_qemu(tmp_path, test[:200].numpy())
    assert st_m4 == 0 and np.abs(m4 - ref).max() <= 1e-5


def test_per_group_codebooks_and_nan_fallback(setup, tmp_path):
    actor, calib, test = setup
    q = quantize_actor(actor, "jlcm", 4, calib=calib, steps=5, codebook="per_group", num_groups=3)
    assert any(layer.codebooks.shape[0] == 3 for layer in q.layers.values())
    ref, _ = _export(actor, q, test[:100], tmp_path)
    states = test[:100].numpy().copy()
    states[5, 3] = np.nan
    states[7, 30] = np.inf
    host, st = verify.run_host(tmp_path, states)
    assert st == 0
    keep = np.ones(100, bool)
    keep[[5, 7]] = False
    assert np.abs(host[keep] - ref[keep]).max() <= 1e-5
    assert np.allclose(host[[5, 7]], np.float32(2 / 1.9 - 1))


def test_bad_input_errors(setup):
    actor, _, _ = setup
    with pytest.raises(ValueError, match="bits=5"):
        quantize_actor(actor, "jlcm", 5)
    with pytest.raises(ValueError, match="calibration"):
        quantize_actor(actor, "jlcm", 3, calib=None)
    with pytest.raises(ValueError, match="method='fp8'"):
        quantize_actor(actor, "fp8", 3)
    deepsets = make_policy("deepsets", obs_spec(2), 8, preset="deployable").actor
    with pytest.raises(ValueError, match="DeepSetsEncoder"):
        check_supported(deepsets)
    odd = make_policy("attention", obs_spec(2), 8, preset="deployable").actor
    odd.encoder.head[1] = nn.GELU()
    with pytest.raises(ValueError, match="GELU at actor.encoder.head.1"):
        check_supported(odd)


def test_cli_bad_input_exit_2(capsys, tmp_path):
    from marl.cli import main

    assert main(["export", "--policy", "deployable", "--method", "jlcm", "--bits", "5", "--out", str(tmp_path)]) == 2
    assert "bits=5" in capsys.readouterr().err
    assert main(["export", "--policy", "deployable", "--calib", "none", "--out", str(tmp_path)]) == 2
    assert "calibration" in capsys.readouterr().err
    assert main(["export", "--policy", "deployable", "--target", "avr", "--out", str(tmp_path)]) == 2


def test_cli_export_cortex_m4_with_onnx(tmp_path):
    from marl.cli import main

    out = tmp_path / "exp"
    assert main(["export", "--policy", "deployable", "--seed", "1", "--method", "int8", "--target", "cortex-m4",
                 "--onnx", "--out", str(out), "--json"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("method", "bits", "weight_bytes", "float32_weight_bytes", "bits_per_weight", "max_abs_action_error",
                "c_vs_torch_max_abs_diff", "flash_bytes", "ram_bytes", "macs", "est_inference_ms_168mhz",
                "qemu_vs_host_max_abs_diff"):
        assert report[key] is not None, key
    assert report["c_vs_torch_max_abs_diff"] <= 1e-5 and report["qemu_vs_host_max_abs_diff"] <= 1e-5
    assert report["onnx_vs_torch_max_abs_diff"] <= 1e-5
    assert report["self_test"] == "pass" and report["qemu_self_test"] == "pass"
    assert report["states_from"] == "policy rollouts"  # the states the deployed policy sees
    for name in ("policy.c", "policy.h", "controller_policy.c", "report.md", "policy.onnx"):
        assert (out / name).is_file()


def test_crazyflie_template_compiles_and_runs(setup, tmp_path):
    actor, _, test = setup
    q = quantize_actor(actor, "int8")
    _export(actor, q, test, tmp_path)
    (tmp_path / "stabilizer_types.h").write_text(STUBS_H)
    (tmp_path / "controller_policy.c").write_text(CONTROLLER_C)
    (tmp_path / "main.c").write_text(STUB_MAIN_C)
    subprocess.run(["gcc", *verify.HOST_CFLAGS, "-I.", "policy.c", "controller_policy.c", "main.c", "-lm", "-o",
                    "cf"], cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.run(["./cf"], cwd=tmp_path, capture_output=True, text=True, check=True)
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    obs = np.array(lines["obs"].split(), float)
    forces = np.array(lines["forces"].split(), float)
    assert obs.shape == (40,) and np.allclose(obs[:6], 0) and np.allclose(obs[6:15], np.eye(3).ravel())
    assert obs[18] == pytest.approx(1.0) and np.allclose(obs[31:], 10.0)
    assert np.all((forces >= 0) & (forces <= 1)) and lines["mode"] == "2"


def test_fast_tanh_matches_torch_on_dense_grid(tmp_path):
    """act_tanh (rational approximation, no libm) vs torch.tanh on 2M+ float32 points over [-12, 12]."""
    from deploy.export_c import _used_kernels

    grid = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                           np.array([0.0, -0.0, 4e-4, -4e-4, 7.9053111, -7.9053111, 1e-30, 3e38, -3e38], np.float32)])
    (tmp_path / "t.c").write_text(
        "#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
        + _used_kernels("act_tanh(") + r"""
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    float *v = malloc(sizeof(float) * (size_t)n);
    FILE *f = fopen("g.bin", "rb");
    if (!v || !f || fread(v, sizeof(float), (size_t)n, f) != (size_t)n) return 2;
    fclose(f);
    act_tanh(v, (int)n);
    f = fopen("o.bin", "wb");
    fwrite(v, sizeof(float), (size_t)n, f);
    fclose(f);
    free(v);
    return 0;
}
""")
    grid.tofile(tmp_path / "g.bin")
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function", "t.c", "-lm",
                    "-o", "t"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["./t", str(grid.size)], cwd=tmp_path, check=True)
    out = np.fromfile(tmp_path / "o.bin", dtype=np.float32)
    err = np.abs(out.astype(np.float64) - torch.tanh(torch.from_numpy(grid)).double().numpy())
    assert err.max() < 3e-7, err.max()
    assert np.all(np.abs(out) <= 1.0)


def test_batched_tokens_more_neighbours(tmp_path):
    """Four neighbours + obstacle = 5 tokens: the shared layers run as a 3-input and a 2-input call."""
    torch.manual_seed(3)
    cfg = default_env_config(4)
    actor = make_policy("attention", obs_spec(4), 8, preset="deployable").actor.eval()
    with torch.no_grad():
        actor.mean.weight.mul_(100.0)
    states = record_states(cfg, 100, seed=5, steps=100)
    for method, bits in (("float32", None), ("kmeans", 3)):
        q = quantize_actor(actor, method, bits)
        ref, _ = _export(actor, q, states, tmp_path / method)
        body = (tmp_path / method / "policy.c").read_text()
        assert "_t3(" in body and "_t2(" in body
        host, st = verify.run_host(tmp_path / method, states.numpy())
        assert st == 0 and np.abs(host - ref).max() <= 1e-5


def test_closed_loop_report_in_export(tmp_path):
    """``closed_loop`` in report.json: one short sim episode per method (jlcm skipped without calibration)."""
    from deploy.closed_loop import closed_loop_markdown
    from deploy.export import export_policy

    report = export_policy(tmp_path / "cl", method="int8", target="host", preset="deployable", calib="none",
                           closed_loop=1, closed_loop_backends=("sim",),
                           closed_loop_kwargs={"episode_seconds": 0.4})
    rows = report["closed_loop"]
    assert [(r["method"], r["bits"]) for r in rows] == [("float32", 32), ("int8", 8), ("int4", 4), ("kmeans", 3)]
    assert rows[0]["max_abs_action_error"] == 0.0 and rows[0]["success_change_sim"] == 0.0
    assert all(r["success_change_sim"] == pytest.approx(r["success_sim"] - rows[0]["success_sim"]) for r in rows)
    assert rows[1]["max_abs_action_error"] < rows[2]["max_abs_action_error"]  # int8 is closer to float32 than int4
    assert json.loads((tmp_path / "cl" / "report.json").read_text())["closed_loop"] == rows
    assert all(r["weight_bytes"] > 0 and r["bits_per_weight"] > 0 for r in rows)
    assert "success sim" in closed_loop_markdown(rows, ("sim",)) and "weight bytes" in closed_loop_markdown(rows)
    assert "Closed loop" in (tmp_path / "cl" / "report.md").read_text()


def test_closed_loop_report_reuses_a_precomputed_compression():
    """The export passes its own compressed actor: the report flies it instead of compressing again."""
    from deploy.closed_loop import closed_loop_report

    cfg = default_env_config()
    torch.manual_seed(0)
    actor = make_policy("attention", obs_spec(cfg.num_neighbors), cfg.num_drones, preset="deployable").actor.eval()
    int4 = quantize_actor(actor, "int4", 4)
    rows = closed_loop_report(actor, cfg, [("int8", 8)], episodes=1, backends=("sim",), precomputed={("int8", 8): int4},
                              episode_seconds=0.4)
    assert rows[0]["weight_bytes"] == int4.accounting()["weight_bytes"]
    assert rows[0]["weight_bytes"] < quantize_actor(actor, "int8", 8).accounting()["weight_bytes"]


def test_parse_methods_fills_in_default_bits_and_refuses_unknown_ones():
    from deploy.closed_loop import parse_methods

    # the bits filled in are the keys closed_loop_report looks its precomputed compressions up by
    assert parse_methods("float32, jlcm,gptq:4") == [("float32", 32), ("jlcm", 3), ("gptq", 4)]
    with pytest.raises(ValueError, match="bits=7 is not supported by method 'jlcm'"):
        parse_methods("jlcm:7")
    with pytest.raises(ValueError, match="method='jlcmx' is unknown"):
        parse_methods("jlcmx:3")
