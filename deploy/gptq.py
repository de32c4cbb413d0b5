"""Calibrated baselines for JLCM: GPTQ on a per-channel uniform grid, calibration-weighted k-means, and the
float32 bias / LayerNorm re-learning (``tune_float``) for any fixed compressed weights.

Called through ``deploy.quantize.quantize_actor(actor, method, bits, calib=states, **settings)`` with
``method`` ``gptq`` or ``kmeans_w`` (``tune_float=True`` also works for int8 / int4 / kmeans), settings
:class:`CalibratedConfig`. They get the same calibration states as JLCM and, on request, the same
per-layer width allocation and the same re-learning of the float32 parameters, so that a comparison
isolates what JLCM's joint codebook + mapping learning adds (docs/deploy.md).

- ``gptq``: GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, ICLR 2023): per layer, in execution order and on
  the inputs that the already-quantised layers produce, the columns are rounded one at a time in order of
  decreasing Hessian diagonal (``act_order``) and each column's rounding error is spread over the columns
  not yet rounded through the Cholesky factor of the inverse Hessian H = E[x x^T] (damped by 1 % of its
  mean diagonal): deploy.jlcm.gptq_indices, shared with JLCM's initial mappings. The grid is uniform per
  output channel, w = s q with q in [-2^(b-1), 2^(b-1) - 1] and one float32 scale s per row (its sign
  puts the 2^(b-1) side on the row's largest |w|; |s| from GPTQ's clipping search: the shrink of the
  min-max scale with the least sum |w - s q|^2.4). That is the ``int`` storage the C kernels already read
  (a 2^b-entry integer table and a per-row scale), at any width in ``PALETTE_BITS``: no new C.
  ``allocate``: per-layer widths chosen like JLCM's (deploy.jlcm.greedy_allocate: each layer's
  calibration loss with only that layer GPTQ-quantised at each width, upgrades by loss drop per byte)
  within the bytes of the uniform b-bit int layout (``budget_bits`` to set another budget).
- ``kmeans_w``: the ``kmeans`` palette (one float16 codebook of 2^b entries per tensor), its 1-D k-means
  weighted by the diagonal of the layer-input Hessian X^T X (weight w_ij counts with E[x_j^2], the
  expected squared input it multiplies), so codewords go where rounding costs output error.

Written by hand: the GPTQ libraries (AutoGPTQ, GPTQModel, optimum, llm-compressor) quantise transformer
language models on GPUs into their own packed kernels; none takes a tiny torch MLP / attention actor on a
CPU onto the integer format that deploy/export_c.py reads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call

from deploy.formats import (
    PALETTE_BITS,
    QuantizedLinear,
    decode_palette,
    kmeans_1d,
    linear_layers,
    nearest,
    packed_bytes,
    to_f16,
)
from deploy.jlcm import (
    JLCMConfig,
    _float_params,
    _layer_inputs,
    action_loss,
    candidate_bits,
    gptq_indices,
    greedy_allocate,
)

_JLCM = JLCMConfig.model_fields  # the re-learning settings below default to JLCM's


class CalibratedConfig(BaseModel):
    """Settings of the calibrated baselines (``gptq``, ``kmeans_w``) and of ``tune_float`` for any method.

    The re-learning settings (steps, batch, lr_float, loss_power, eval) are JLCM's defaults, so both
    re-learn the float32 parameters the same way."""

    model_config = ConfigDict(extra="forbid")

    tune_float: bool = Field(False, description="re-learn the float32 biases and LayerNorm gains / shifts "
                             "against the float actor's actions on the calibration states (weights fixed)")
    allocate: bool = Field(False, description="gptq only: per-layer widths within the byte budget (as JLCM)")
    widths: tuple[int, ...] | None = Field(None, description="widths the allocation may use (None: every width "
                                           "the C kernels decode, up to 2 * bits)")
    budget_bits: float | None = Field(None, gt=0, description="allocation budget in bits per weight, everything "
                                      "included (None: the bytes of the uniform b-bit layout)")
    act_order: bool = Field(True, description="gptq: round columns by decreasing Hessian diagonal")
    damp: float = Field(0.01, ge=0, description="gptq: Hessian damping, a fraction of its mean diagonal")
    sequential: bool = Field(True, description="gptq: each layer's Hessian on the already-quantised layers' outputs")
    steps: int = Field(_JLCM["steps"].default, ge=0, description="tune_float: Adam steps")
    batch: int = Field(_JLCM["batch"].default, ge=1)
    lr_float: float = Field(_JLCM["lr_float"].default, gt=0, description="tune_float: Adam step (cosine decay)")
    loss_power: float = Field(_JLCM["loss_power"].default, ge=2.0,
                              description="p of the action loss (mean |e|^p)^(2/p)")
    eval_every: int = Field(_JLCM["eval_every"].default, ge=1)
    max_eval_states: int = Field(_JLCM["max_eval_states"].default, ge=1,
                                 description="calibration states of the Hessians and evaluations")
    seed: int = 0


# ---- the uniform per-channel grid ------------------------------------------------------------------------

def uniform_scales(w: np.ndarray, bits: int, norm: float = 2.4, grid: int = 100, max_shrink: float = 0.8) -> np.ndarray:
    """Per-row signed scales [out] of the grid s * q, q in [-2^(b-1), 2^(b-1) - 1]: the sign puts the
    2^(b-1) side on the row's largest |w|; |s| is the min-max scale shrunk by the factor in
    1, 0.99, ..., 1 - max_shrink with the least sum |w - s q|^norm (GPTQ's ``mse`` clipping search)."""
    w = np.asarray(w, np.float64)
    half = 1 << (bits - 1)
    peak = w[np.arange(w.shape[0]), np.abs(w).argmax(1)]  # [out] the largest-|w| entry, signed
    other = np.where(peak >= 0, -w.min(1), w.max(1)).clip(min=0)  # extent on the other side
    base = np.maximum(np.abs(peak) / half, other / max(half - 1, 1))
    base = np.where(base > 0, base, 1.0)
    sign = np.where(peak >= 0, -1.0, 1.0)  # q = -2^(b-1) lands on the peak
    best, best_err = base.copy(), np.full(w.shape[0], np.inf)
    for i in range(int(max_shrink * grid)):
        s = base * (1 - i / grid)
        q = np.clip(np.round(w / (sign * s)[:, None]), -half, half - 1)
        err = (np.abs(w - q * (sign * s)[:, None]) ** norm).sum(1)
        better = err < best_err
        best, best_err = np.where(better, s, best), np.where(better, err, best_err)
    return (sign * best).astype(np.float32)


def round_to_grid(w: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """Round-to-nearest integers [out, in] on the grid ``scale[i] * q`` (no error compensation)."""
    half = 1 << (bits - 1)
    q = np.round(np.asarray(w, np.float64) / scale.astype(np.float64)[:, None])
    return np.clip(q, -half, half - 1).astype(np.int64)


def gptq_quantize(w: np.ndarray, scale: np.ndarray, bits: int, h: np.ndarray, damp: float = 0.01,
                  act_order: bool = True) -> np.ndarray:
    """GPTQ integers [out, in] on the grid ``scale[i] * q`` for the input Hessian ``h`` [in, in]."""
    half = 1 << (bits - 1)
    levels = np.arange(-half, half, dtype=np.float64)
    books = np.broadcast_to(levels, (w.shape[0], levels.size))
    idx = gptq_indices(np.asarray(w, np.float64), books, scale.astype(np.float64), h, damp, act_order)
    return idx - half


def int_layer(name: str, layer: nn.Linear, bits: int, q: np.ndarray, scale: np.ndarray) -> QuantizedLinear:
    """The ``int`` storage of integers q [out, in] with float32 row scales (what the C int kernels read)."""
    deq = torch.from_numpy(q.astype(np.float32)) * torch.from_numpy(scale.astype(np.float32)).unsqueeze(1)
    bias = None if layer.bias is None else layer.bias.detach().float().clone()
    return QuantizedLinear(name, "int", bits, tuple(layer.weight.shape), deq, bias, q=q.astype(np.int64),
                           row_scales=scale.astype(np.float32))


def int_bytes(out: int, inp: int, bits: int) -> int:
    """Stored bytes of an ``int`` weight: packed integers and a float32 scale per row."""
    return packed_bytes(out * inp, bits) + 4 * out


def _hessian(x: torch.Tensor) -> np.ndarray:
    x = x.double()
    return (x.T @ x / x.shape[0]).numpy()


def gptq_layers(actor: nn.Module, layer_bits: dict[str, int], x: torch.Tensor, cfg: CalibratedConfig
                ) -> dict[str, QuantizedLinear]:
    """GPTQ every Linear at its width ``layer_bits[name]`` on states ``x``; sequentially (each layer on
    the inputs that the layers quantised before it produce) unless ``cfg.sequential`` is off."""
    modules = linear_layers(actor)
    done: dict[str, torch.Tensor] = {}
    out: dict[str, QuantizedLinear] = {}
    float_inputs = _layer_inputs(actor, {}, x)
    for name in list(float_inputs):
        inputs = _layer_inputs(actor, done, x)[name] if cfg.sequential else float_inputs[name]
        w = modules[name].weight.detach().double().numpy()
        bits = layer_bits[name]
        scale = uniform_scales(w, bits)
        q = gptq_quantize(w, scale, bits, _hessian(inputs), cfg.damp, cfg.act_order)
        out[name] = int_layer(name, modules[name], bits, q, scale)
        done[f"{name}.weight"] = out[name].weight
    return {n: out[n] for n in modules}


def gptq_compress(actor: nn.Module, bits: int, calib: torch.Tensor, cfg: CalibratedConfig
                  ) -> tuple[dict[str, QuantizedLinear], dict[str, Any]]:
    """GPTQ every Linear of ``actor`` at ``bits`` (or at allocated widths); returns the layers and a log."""
    actor = actor.eval()
    x = calib.detach().float().reshape(-1, calib.shape[-1])[: cfg.max_eval_states]
    modules = linear_layers(actor)
    shapes = {n: tuple(m.weight.shape) for n, m in modules.items()}
    uniform = sum(int_bytes(o, i, bits) for o, i in shapes.values())
    log: dict[str, Any] = {"calib_states": int(x.shape[0]), "uniform_bytes": uniform}
    if not cfg.allocate:
        return gptq_layers(actor, dict.fromkeys(modules, bits), x, cfg), log
    widths = candidate_bits(bits, cfg.widths)
    n_weights = sum(o * i for o, i in shapes.values())
    budget = uniform if cfg.budget_bits is None else int(cfg.budget_bits * n_weights) // 8
    with torch.no_grad():
        target = actor(x)
    inputs = _layer_inputs(actor, {}, x)
    sens: dict[str, dict[int, float]] = {n: {} for n in modules}
    for n, m in modules.items():  # each layer alone at each width, GPTQ on the float inputs (as JLCM)
        w = m.weight.detach().double().numpy()
        h = _hessian(inputs[n])
        for c in widths:
            scale = uniform_scales(w, c)
            deq = int_layer(n, m, c, gptq_quantize(w, scale, c, h, cfg.damp, cfg.act_order), scale).weight
            with torch.no_grad():
                pred = functional_call(actor, {f"{n}.weight": deq}, (x,))
            sens[n][c] = float(action_loss(pred, target, cfg.loss_power))
    cost = {n: {c: int_bytes(*shapes[n], c) for c in widths} for n in modules}
    alloc = greedy_allocate(sens, cost, budget)
    log.update(budget_bytes=budget, layer_bits=alloc, layer_loss=sens)
    return gptq_layers(actor, alloc, x, cfg), log


# ---- calibration-weighted k-means -------------------------------------------------------------------------

def weighted_kmeans_1d(values: np.ndarray, weights: np.ndarray, k: int, iters: int = 60) -> np.ndarray:
    """Sorted 1-D k-means centres minimising sum_i weights_i (values_i - c(i))^2: weighted Lloyd iterations
    from two starts, the weighted quantiles and the unweighted k-means centres (deploy.formats.kmeans_1d),
    keeping the lower weighted error; since Lloyd steps never raise it, the result is never worse in the
    weighted error than the unweighted centres."""
    order = np.argsort(np.asarray(values, np.float64).ravel(), kind="stable")
    x = np.asarray(values, np.float64).ravel()[order]
    wt = np.maximum(np.asarray(weights, np.float64).ravel()[order], 0.0)
    if wt.sum() <= 0:
        wt = np.ones_like(x)
    k_eff = min(k, np.unique(x).size)
    cdf = (np.cumsum(wt) - 0.5 * wt) / wt.sum()
    starts = [np.interp((np.arange(k_eff) + 0.5) / k_eff, cdf, x), kmeans_1d(x, k_eff)]
    best, best_err = starts[1], np.inf
    for centres in starts:
        for _ in range(iters):
            lab = nearest(x, centres)
            sums = np.bincount(lab, weights=x * wt, minlength=k_eff)
            mass = np.bincount(lab, weights=wt, minlength=k_eff)
            new = np.sort(np.where(mass > 0, sums / np.maximum(mass, 1e-300), centres))
            if np.allclose(new, centres, rtol=0, atol=1e-12):
                break
            centres = new
        err = float((wt * (x - centres[nearest(x, centres)]) ** 2).sum())
        if err < best_err:
            best, best_err = centres, err
    if k_eff < k:
        best = np.concatenate([best, np.full(k - k_eff, best[-1])])
    return best


def input_importance(actor: nn.Module, calib: torch.Tensor) -> dict[str, np.ndarray]:
    """diag(X^T X) / N [in] of every Linear's inputs on the calibration states (the float actor)."""
    x = calib.detach().float().reshape(-1, calib.shape[-1])
    return {n: v.double().pow(2).mean(0).numpy() for n, v in _layer_inputs(actor, {}, x).items()}


def kmeans_weighted_layer(name: str, layer: nn.Linear, bits: int, importance: np.ndarray) -> QuantizedLinear:
    """The ``kmeans`` palette of one tensor, its k-means weighted by each column's input importance."""
    w = layer.weight.detach().double().numpy()
    weights = np.broadcast_to(importance[None, :], w.shape)
    centres = np.sort(to_f16(weighted_kmeans_1d(w, weights, 1 << bits)).astype(np.float64))
    idx = nearest(w, centres)
    cb = centres.astype(np.float16)[None, :]
    bias = None if layer.bias is None else layer.bias.detach().float().clone()
    return QuantizedLinear(name, "palette", bits, w.shape, decode_palette(idx, cb, None, None), bias,
                           indices=idx, codebooks=cb)


# ---- re-learning the float32 parameters -------------------------------------------------------------------

def tune_float(actor: nn.Module, layers: dict[str, QuantizedLinear], calib: torch.Tensor, cfg: CalibratedConfig
               ) -> tuple[dict[str, QuantizedLinear], dict[str, torch.Tensor], dict[str, Any]]:
    """Re-learn the float32 biases and LayerNorm parameters with the compressed weights fixed, as JLCM does
    jointly with its codebooks (same loss, Adam step, cosine decay, batch and steps; the best calibration
    loss of the evaluations is kept). Returns the layers with the new biases, the other re-learned
    parameters by path (LayerNorm) and a log."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        actor = actor.eval()
        calib = calib.detach().float().reshape(-1, calib.shape[-1])
        gen = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            target = actor(calib)
        eval_x, eval_y = calib[: cfg.max_eval_states], target[: cfg.max_eval_states]
        weights = {f"{n}.weight": ql.weight for n, ql in layers.items()}
        floats = _float_params(actor)
        with torch.no_grad():
            for n, ql in layers.items():  # start from the stored biases
                if ql.bias is not None and f"{n}.bias" in floats:
                    floats[f"{n}.bias"].copy_(ql.bias)
        opt = torch.optim.Adam(list(floats.values()), lr=cfg.lr_float)

        def eval_loss() -> float:
            with torch.no_grad():
                return float(action_loss(functional_call(actor, {**weights, **floats}, (eval_x,)), eval_y,
                                         cfg.loss_power))

        init_loss = best_loss = eval_loss()
        best = {k: v.detach().clone() for k, v in floats.items()}
        best_step = 0
        for step in range(1, cfg.steps + 1):
            for group in opt.param_groups:
                group["lr"] = cfg.lr_float * 0.5 * (1 + math.cos(math.pi * (step - 1) / cfg.steps))
            pick = torch.randint(0, calib.shape[0], (min(cfg.batch, calib.shape[0]),), generator=gen)
            loss = action_loss(functional_call(actor, {**weights, **floats}, (calib[pick],)), target[pick],
                               cfg.loss_power)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                current = eval_loss()
                if current < best_loss:
                    best_loss, best_step = current, step
                    best = {k: v.detach().clone() for k, v in floats.items()}
    finally:
        torch.set_num_threads(threads)
    out = {}
    for n, ql in layers.items():
        bias = best.pop(f"{n}.bias", None)
        out[n] = ql if bias is None else QuantizedLinear(**{**ql.__dict__, "bias": bias.float().clone()})
    log = {"tune_float": {"init_loss": init_loss, "best_loss": best_loss, "best_step": best_step}}
    return out, {k: v.float().clone() for k, v in best.items()}, log


__all__ = [
    "PALETTE_BITS", "CalibratedConfig", "gptq_compress", "gptq_layers", "gptq_quantize", "input_importance",
    "int_bytes", "int_layer", "kmeans_weighted_layer", "round_to_grid", "tune_float", "uniform_scales",
    "weighted_kmeans_1d",
]
