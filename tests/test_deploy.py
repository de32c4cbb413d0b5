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
    """A deployable attention actor with a 100x action layer (actions span [-1, 1]) and recorded states."""
    torch.manual_seed(0)
    cfg = default_env_config(2)
    actor = make_policy("attention", obs_spec(2), 8, preset="deployable").actor.eval()
    with torch.no_grad():
        actor.mean.weight.mul_(100.0)
    calib = record_states(cfg, 1024, seed=0, steps=200)
    test = record_states(cfg, 1000, seed=1, steps=200)
    return actor, calib, test


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


def test_bits_per_weight_accounting(setup):
    actor, calib, _ = setup
    q = quantize_actor(actor, "jlcm", 3, calib=calib, steps=5)
    acc = q.accounting()
    expect = 0
    for layer in q.layers.values():
        out, inp = layer.shape
        g = layer.num_groups
        grouping = math.ceil(out * math.ceil(math.log2(g)) / 8) if g > 1 else 0
        expect += math.ceil(out * inp * 3 / 8) + 2 * 8 + 2 * g + grouping
    assert acc["weight_bytes"] == expect
    assert acc["num_weights"] == sum(m.weight.numel() for m in actor.modules() if isinstance(m, nn.Linear))
    assert acc["weight_bytes"] * 8 <= acc["float32_weight_bytes"]  # <= 1/8 of float32, codebooks included
    assert 3.0 < acc["bits_per_weight"] < 4.0
    other = sum(m.bias.numel() for m in actor.modules() if isinstance(m, nn.Linear))
    other += sum(p.numel() for m in actor.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters())
    assert acc["param_bytes"] == acc["weight_bytes"] + 4 * other
    i8 = quantize_actor(actor, "int8").accounting()
    assert i8["weight_bytes"] == sum(m.weight.numel() + 4 * m.out_features for m in actor.modules()
                                     if isinstance(m, nn.Linear))


def test_jlcm_beats_kmeans_at_3_bits(setup):
    actor, calib, test = setup
    with torch.no_grad():
        ref = actor(test).clamp(-1, 1)
    errs = {}
    for method in ("kmeans", "jlcm"):
        q = quantize_actor(actor, method, 3, calib=calib, steps=200)
        with torch.no_grad():
            errs[method] = (q.dequantized(actor)(test).clamp(-1, 1) - ref).abs()
    assert errs["jlcm"].mean() < 0.8 * errs["kmeans"].mean()
    assert errs["jlcm"].max() < errs["kmeans"].max()


def test_c_matches_torch_on_host_and_qemu(setup, tmp_path):
    actor, calib, test = setup
    q = quantize_actor(actor, "jlcm", 3, calib=calib, steps=20)
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
    assert all(0.0 <= r["success_sim"] <= 1.0 and r["max_abs_action_error"] >= 0.0 for r in rows)
    assert json.loads((tmp_path / "cl" / "report.json").read_text())["closed_loop"] == rows
    assert "success sim" in closed_loop_markdown(rows, ("sim",))
    assert "Closed loop" in (tmp_path / "cl" / "report.md").read_text()
