"""JLCM: jointly learnable codebooks and mappings (Yvinec, Dapogny, Bailly, ICLR 2024), for our small actors.

Called as ``deploy.quantize.quantize_actor(actor, "jlcm", bits, calib=states)``. Per ``nn.Linear``
weight: rows grouped by k-means on their sorted quantiles, one codebook per layer with float16
per-group scales, a per-layer index width (1-8 bits) chosen within the bytes of the uniform b-bit
layout, GPTQ initial mappings, then joint learning of codebooks, scales and the float32 biases /
LayerNorm parameters against the float actor's actions on calibration states, with a proximal
straight-through mapping update whose moves are each kept only if the calibration loss drops. The
paper gives the method in outline only and has no public code: every choice here is ours.

Design note (the seven steps, in detail): docs/design/jlcm.md; measurements and ablations:
docs/deploy.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call, jacrev, vmap

from deploy.formats import (
    PALETTE_BITS,
    QuantizedLinear,
    decode_palette,
    kmeans_1d,
    linear_layers,
    nearest,
    palette_storage,
    to_f16,
)

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class JLCMConfig(BaseModel):
    """Settings of :func:`jlcm_compress` (defaults are the ones measured in docs/deploy.md)."""

    model_config = ConfigDict(extra="forbid")

    num_groups: int = Field(4, ge=1, description="row groups per layer (G)")
    codebook: Literal["shared", "per_group"] = "shared"
    allocate: bool = Field(True, description="per-layer index widths within the byte budget (mixed precision)")
    widths: tuple[int, ...] | None = Field(None, description="widths the allocation may use (None: every "
                                           "width the C kernels decode, up to 2 * bits)")
    budget_bits: float | None = Field(None, gt=0, description="weight storage budget in bits per weight, "
                                      "everything included (None: the bytes of the uniform b-bit layout)")
    init: Literal["gptq", "nearest"] = Field("gptq", description="initial mappings")
    steps: int = Field(1500, ge=0, description="joint-learning steps")
    batch: int = Field(512, ge=1)
    loss_power: float = Field(2.0, ge=2.0, description="p of the action loss (mean |e|^p)^(2/p); 2: the mean square")
    lr_codebook: float = Field(0.01, gt=0, description="Adam step on codebook entries and log-scales")
    tune_float: bool = Field(True, description="also learn the float32 biases and LayerNorm gains / shifts")
    lr_float: float = Field(0.005, gt=0, description="Adam step on biases and LayerNorm parameters")
    mapping: Literal["proximal", "logits"] = Field("proximal", description="mapping update (docstring, step 6)")
    window: int = Field(3, ge=1, description="codewords a mapping update may move a weight on each side")
    map_every: int = Field(25, ge=1, description="steps between two proximal mapping updates")
    max_moves: int = Field(32, ge=1, description="moves tried (each verified) per proximal mapping update")
    hessian_states: int = Field(1024, ge=1, description="states of the Gauss-Newton curvature estimate")
    lr_mapping: float = Field(0.05, gt=0, description="logits: normalised SGD step on mapping logits")
    momentum: float = Field(0.9, ge=0, lt=1, description="logits: momentum of the logit update")
    proximal: bool = Field(True, description="logits: False = plain straight-through weight")
    eval_every: int = Field(25, ge=1)
    max_eval_states: int = Field(8192, ge=1)
    seed: int = 0


def group_rows(w: np.ndarray, num_groups: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Group ids [out] from k-means on each row's sorted quantiles (k-means++ seeding with ``seed``)."""
    out = w.shape[0]
    g = min(num_groups, out)
    if g <= 1:
        return np.zeros(out, np.int64)
    feats = np.quantile(w, QUANTILES, axis=1).T  # [out, 5]
    rng = np.random.default_rng(seed)
    centres = [feats[rng.integers(out)]]
    for _ in range(1, g):
        d2 = np.min([((feats - c) ** 2).sum(1) for c in centres], axis=0)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(out, 1.0 / out)
        centres.append(feats[rng.choice(out, p=p)])
    c = np.stack(centres)
    lab = np.zeros(out, np.int64)
    for _ in range(iters):
        lab = ((feats[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([feats[lab == k].mean(0) if (lab == k).any() else c[k] for k in range(g)])
        if np.allclose(new, c):
            break
        c = new
    # Relabel by first appearance and drop empty groups, so ids are dense.
    _, first = np.unique(lab, return_index=True)
    order = np.argsort(first)
    remap = {int(old): new for new, old in enumerate(np.unique(lab)[order])}
    return np.array([remap[int(v)] for v in lab], np.int64)


@dataclass
class _LayerState:
    name: str
    weight: torch.Tensor  # float [out, in]
    bias: torch.Tensor | None
    groups: torch.Tensor  # [out] long
    num_groups: int
    book_of_row: torch.Tensor  # [out] long: codebook of each row
    codebooks: torch.Tensor  # [C, K] float, learnable
    log_scales: torch.Tensor | None  # [G] learnable (shared mode)
    k0: torch.Tensor  # [out, in] initial indices
    logits: torch.Tensor  # [out, in, 2r+1]
    valid: torch.Tensor  # [out, in, 2r+1] bool
    momentum: torch.Tensor
    sigma: torch.Tensor  # [C] mean codeword gap
    idx: torch.Tensor | None = None  # [out, in] explicit mapping (proximal updates), else the logits' arg-max

    def scales(self) -> torch.Tensor:
        """Per-row scale [out] (ones in per-group mode)."""
        if self.log_scales is None:
            return torch.ones(self.weight.shape[0])
        return self.log_scales.exp()[self.groups]

    def indices(self) -> torch.Tensor:
        """Current hard mapping [out, in]."""
        if self.idx is not None:
            return self.idx
        r = (self.logits.shape[-1] - 1) // 2
        return self.k0 + self.logits.argmax(-1) - r

    def decode(self, codebooks: torch.Tensor, row_scales: torch.Tensor) -> torch.Tensor:
        """W_hat [out, in] = c[book(row), idx] * s(row) (differentiable in codebooks and scales)."""
        rows = codebooks[self.book_of_row]  # [out, K]
        return rows.gather(1, self.indices()) * row_scales.unsqueeze(1)


def _init_layer(name: str, layer: nn.Linear, bits: int, cfg: JLCMConfig) -> _LayerState:
    w = layer.weight.detach().double().numpy()
    out, inp = w.shape
    k = 1 << bits
    groups = group_rows(w, cfg.num_groups, cfg.seed)
    g = int(groups.max()) + 1
    if cfg.codebook == "shared":
        rms = np.array([math.sqrt(float((w[groups == j] ** 2).mean())) or 1.0 for j in range(g)])
        scales = to_f16(rms).astype(np.float64)
        scales[scales == 0] = 1.0
        u = w / scales[groups][:, None]
        books = [np.sort(kmeans_1d(u, k))]
        book_of_row = np.zeros(out, np.int64)
        log_scales: torch.Tensor | None = torch.tensor(np.log(scales), dtype=torch.float32, requires_grad=True)
    else:
        u = w
        books = [np.sort(kmeans_1d(w[groups == j], k)) for j in range(g)]
        book_of_row = groups
        log_scales = None
    cb = np.stack(books)  # [C, K]
    k0 = np.stack([nearest(u[i], cb[book_of_row[i]]) for i in range(out)])  # [out, in]
    gaps = np.diff(cb, axis=1)
    sigma = np.maximum(gaps.mean(1), 1e-8)  # [C]
    r = min(cfg.window, k - 1)
    offsets = np.arange(-r, r + 1)
    cand = k0[..., None] + offsets  # [out, in, 2r+1]
    valid = (cand >= 0) & (cand < k)
    cand_c = np.take_along_axis(
        np.broadcast_to(cb[book_of_row][:, None, :], (out, inp, k)), np.clip(cand, 0, k - 1), axis=2
    )
    sig = sigma[book_of_row][:, None, None]
    logits = -((u[..., None] - cand_c) ** 2) / (2 * sig**2)
    logits = np.where(valid, logits, -np.inf)
    # Ties cannot pick a non-nearest slot: the centre slot (the nearest codeword) gets a tiny bonus.
    logits[..., r] += 1e-6
    return _LayerState(
        name=name,
        weight=layer.weight.detach().float(),
        bias=None if layer.bias is None else layer.bias.detach().float().clone(),
        groups=torch.from_numpy(groups),
        num_groups=g,
        book_of_row=torch.from_numpy(book_of_row),
        codebooks=torch.tensor(cb, dtype=torch.float32, requires_grad=True),
        log_scales=log_scales,
        k0=torch.from_numpy(k0),
        logits=torch.tensor(logits, dtype=torch.float32),
        valid=torch.from_numpy(valid),
        momentum=torch.zeros(logits.shape, dtype=torch.float32),
        sigma=torch.tensor(sigma, dtype=torch.float32),
    )


def _set_mapping(st: _LayerState, k0: np.ndarray) -> None:
    """Restart a layer's mapping at indices ``k0`` [out, in]: the window is centred on k0 and the logits
    favour it, l_o = -(c_m - c_k0)^2 / (2 sigma^2) (plus the centre's tie-break bonus)."""
    r = (st.logits.shape[-1] - 1) // 2
    k = st.codebooks.shape[1]
    cb = st.codebooks.detach().double()[st.book_of_row]  # [out, K]
    k0_t = torch.from_numpy(np.asarray(k0, np.int64))
    cand = k0_t.unsqueeze(-1) + torch.arange(-r, r + 1)
    valid = (cand >= 0) & (cand < k)
    c_cand = cb.unsqueeze(1).expand(-1, k0_t.shape[1], -1).gather(2, cand.clamp(0, k - 1))
    c0 = cb.gather(1, k0_t).unsqueeze(-1)
    sig = st.sigma.double()[st.book_of_row].view(-1, 1, 1)
    logits = -((c_cand - c0) ** 2) / (2 * sig**2)
    logits = torch.where(valid, logits, torch.full_like(logits, -math.inf))
    logits[..., r] += 1e-6
    st.k0, st.valid = k0_t, valid
    st.logits = logits.float()
    st.momentum = torch.zeros_like(st.logits)
    st.idx = None


def gptq_indices(w: np.ndarray, books: np.ndarray, row_scale: np.ndarray, h: np.ndarray,
                 damp: float = 0.01, act_order: bool = False) -> np.ndarray:
    """Mappings [out, in] that minimise the layer's output error E||(W - W_hat) x||^2 column by column
    (GPTQ, Frantar et al. 2023, on a codebook grid): column j takes the nearest codeword of each row
    (row i's codebook books[i] [out, K], times row_scale[i]); its rounding error is spread over the
    columns not yet mapped through the inverse Hessian H^-1 of the layer's inputs (H = E[x x^T]).
    ``act_order``: map the columns by decreasing H_jj (GPTQ's activation order) instead of left to right."""
    if act_order:
        perm = np.argsort(-np.diag(h), kind="stable")
        idx = gptq_indices(w[:, perm], books, row_scale, h[np.ix_(perm, perm)], damp)
        out_idx = np.empty_like(idx)
        out_idx[:, perm] = idx
        return out_idx
    w = w.astype(np.float64).copy()
    out, inp = w.shape
    h = h.astype(np.float64) + damp * max(float(np.mean(np.diag(h))), 1e-12) * np.eye(inp)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # H^-1 = U^T U, U upper triangular
    idx = np.zeros((out, inp), np.int64)
    grid = books * row_scale[:, None]  # [out, K]
    for j in range(inp):
        col = w[:, j]
        k = np.abs(grid - col[:, None]).argmin(1)
        q = grid[np.arange(out), k]
        idx[:, j] = k
        err = (col - q) / u[j, j]
        w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    return idx


def _rounded(st: _LayerState) -> tuple[torch.Tensor, torch.Tensor]:
    """float16-rounded codebooks [C, K] and per-row scales [out] (the stored values)."""
    cb = torch.from_numpy(to_f16(st.codebooks).astype(np.float32))
    if st.log_scales is None:
        return cb, torch.ones(st.weight.shape[0])
    s = torch.from_numpy(to_f16(st.log_scales.exp()).astype(np.float32))
    return cb, s[st.groups]


def _mapping_step(st: _LayerState, grad_w: torch.Tensor, cfg: JLCMConfig, lr: float) -> None:
    """The soft-logit straight-through mapping update (``mapping="logits"``, the ablation of step 6)."""
    with torch.no_grad():
        r = (st.logits.shape[-1] - 1) // 2
        k = st.codebooks.shape[1]
        cb_rows = st.codebooks[st.book_of_row]  # [out, K]
        idx = st.indices()
        c_cur = cb_rows.gather(1, idx)  # [out, in]
        cand = (st.k0.unsqueeze(-1) + torch.arange(-r, r + 1)).clamp(0, k - 1)  # [out, in, 2r+1]
        c_cand = cb_rows.unsqueeze(1).expand(-1, cand.shape[1], -1).gather(2, cand)
        delta = c_cand - c_cur.unsqueeze(-1)
        s = st.scales().view(-1, 1, 1)
        sigma = st.sigma[st.book_of_row].view(-1, 1, 1)
        weight = torch.exp(-(delta**2) / (2 * sigma**2)) if cfg.proximal else torch.ones_like(delta)
        g = grad_w.unsqueeze(-1) * s * delta * weight
        g = torch.where(st.valid, g, torch.zeros_like(g))
        norm = (grad_w.unsqueeze(-1) * s * sigma).pow(2).mean().sqrt().clamp_min(1e-30)
        st.momentum.mul_(cfg.momentum).add_(g / norm)
        st.logits.sub_(lr * st.momentum)


def _proximal_moves(st: _LayerState, grad: torch.Tensor, hess: torch.Tensor, window: int) -> tuple[torch.Tensor, ...]:
    """Best move of every weight: (predicted loss change [out, in], new index [out, in]).

    Moving weight w_ij from codeword c_k to c_m changes the decoded weight by d = s (c_m - c_k); the
    straight-through estimate of the loss change is G d, and the quadratic (proximal) term 1/2 H d^2
    grows with the distance, so a move to a far codeword needs a proportionally larger first-order gain."""
    with torch.no_grad():
        k = st.codebooks.shape[1]
        cb = st.codebooks[st.book_of_row]  # [out, K]
        idx = st.indices()
        c_cur = cb.gather(1, idx)
        s = st.scales().unsqueeze(1)
        best_gain = torch.zeros_like(grad)
        best_idx = idx.clone()
        for o in range(-window, window + 1):
            if o == 0:
                continue
            cand = idx + o
            ok = (cand >= 0) & (cand < k)
            d = s * (cb.gather(1, cand.clamp(0, k - 1)) - c_cur)
            gain = torch.where(ok, grad * d + 0.5 * hess * d * d, torch.zeros_like(d))
            better = gain < best_gain
            best_gain = torch.where(better, gain, best_gain)
            best_idx = torch.where(better, cand, best_idx)
        # one move per row: moves in one row correct the same output and overshoot together
        keep = best_gain <= best_gain.min(1, keepdim=True).values
        keep &= torch.cumsum(keep.long(), 1) == 1
        return torch.where(keep, best_gain, torch.zeros_like(best_gain)), best_idx


def _gauss_newton_diag(actor: nn.Module, weights: dict[str, torch.Tensor], floats: dict[str, torch.Tensor],
                       x: torch.Tensor, chunk: int = 256) -> dict[str, torch.Tensor]:
    """Diagonal Gauss-Newton curvature of the action loss in every weight: H = 2 / (N A) sum_{n,a} (df_na/dW)^2."""

    def f(w: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(actor, {**w, **floats}, (xi.unsqueeze(0),)).squeeze(0)

    w = {k: v.detach() for k, v in weights.items()}
    h = {k: torch.zeros_like(v) for k, v in w.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vmap falls back to a loop for CPU attention
        for i in range(0, x.shape[0], chunk):
            jac = vmap(jacrev(f), in_dims=(None, 0))(w, x[i : i + chunk])
            for k in h:
                h[k] += jac[k].pow(2).sum((0, 1))
    n_out = next(iter(jac.values())).shape[1]
    return {k: 2 * v / (x.shape[0] * n_out) for k, v in h.items()}


def action_loss(pred: torch.Tensor, target: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """(mean |e|^p)^(2/p) of the error e against the float actor's actions as the motors see them
    (clamped to [-1, 1]); p = 2 is the mean squared error, a larger p weighs the largest errors more.

    The error is measured from the clamped target; a prediction beyond a bound that the target also
    sits at (or beyond) costs nothing, since both clamp to the same command.
    """
    t = target.clamp(-1.0, 1.0)
    err = pred - t
    err = torch.where(((t >= 1.0) & (pred > 1.0)) | ((t <= -1.0) & (pred < -1.0)), torch.zeros_like(err), err)
    if power == 2.0:
        return (err**2).mean()
    return err.abs().pow(power).mean().pow(2.0 / power)


def _layer_bytes(st: _LayerState, bits: int) -> int:
    """Stored bytes of a layer's weight (indices, codebooks, scales, group ids), as QuantizedLinear.storage."""
    scales = 0 if st.log_scales is None else st.num_groups
    return sum(palette_storage(*st.weight.shape, bits, st.codebooks.numel(), scales, st.num_groups).values())


def candidate_bits(bits: int, widths: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Per-layer widths the allocation chooses from at nominal ``bits``: every width the C kernels decode
    up to 2 * bits (or ``widths``), always including ``bits``."""
    if widths is not None:
        return tuple(sorted(set(widths) | {bits}))
    return tuple(sorted({b for b in PALETTE_BITS if b <= 2 * bits} | {bits}))


def _allocate(
    actor: nn.Module, states: dict[int, dict[str, _LayerState]], budget: int,
    eval_x: torch.Tensor, eval_y: torch.Tensor, loss_fn: Any = action_loss,
) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
    """Greedy bit allocation (docstring, step 3): every layer starts at its narrowest width; the upgrade
    with the largest drop of the calibration loss per extra byte is taken while the total stays within
    ``budget``. A layer's loss at width c is the calibration loss with only that layer replaced by its
    width-c initialisation (the others float)."""
    widths = sorted(states)
    names = list(states[widths[0]])
    sens: dict[str, dict[int, float]] = {n: {} for n in names}
    with torch.no_grad():
        for c in widths:
            for n in names:
                cb, sc = _rounded(states[c][n])
                pred = functional_call(actor, {f"{n}.weight": states[c][n].decode(cb, sc)}, (eval_x,))
                sens[n][c] = float(loss_fn(pred, eval_y))
    cost = {n: {c: _layer_bytes(states[c][n], c) for c in widths} for n in names}
    return greedy_allocate(sens, cost, budget), sens


def uniform_budget_bytes(actor: nn.Module, bits: int, **settings: Any) -> int:
    """Bytes of JLCM's uniform ``bits``-bit layout of ``actor`` (the allocation's default budget): what a
    baseline's allocation gets to be compared with JLCM at the same storage."""
    cfg = JLCMConfig(**settings)
    return sum(_layer_bytes(_init_layer(n, m, bits, cfg), bits) for n, m in linear_layers(actor).items())


def greedy_allocate(sens: dict[str, dict[int, float]], cost: dict[str, dict[int, int]], budget: int) -> dict[str, int]:
    """Per-layer widths: every layer starts at its narrowest width; the upgrade (to the next width) with the
    largest drop of the loss ``sens[layer][width]`` per extra byte ``cost[layer][width]`` is taken while the
    total stays within ``budget`` bytes (shared by JLCM and deploy.gptq's allocated GPTQ)."""
    names = list(sens)
    widths = sorted(next(iter(sens.values())))
    alloc = {n: widths[0] for n in names}
    total = sum(cost[n][alloc[n]] for n in names)
    while True:
        best, best_gain = None, 0.0
        for n in names:
            i = widths.index(alloc[n])
            if i + 1 == len(widths):
                continue
            c = widths[i + 1]
            extra = cost[n][c] - cost[n][alloc[n]]
            if total + extra > budget:
                continue
            gain = (sens[n][alloc[n]] - sens[n][c]) / max(extra, 1)
            if best is None or gain > best_gain:
                best, best_gain = n, gain
        if best is None:
            break
        c = widths[widths.index(alloc[best]) + 1]
        total += cost[best][c] - cost[best][alloc[best]]
        alloc[best] = c
    return alloc


def _layer_inputs(actor: nn.Module, weights: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs [n, in] of every Linear (all its calls stacked) in a forward pass with ``weights``, in the
    order the layers first run."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in linear_layers(actor).items():
        def hook(mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
            seen.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))
        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            functional_call(actor, weights, (x,))
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


def _gptq_init(actor: nn.Module, states: dict[str, _LayerState], x: torch.Tensor) -> None:
    """Sequential GPTQ mappings: layer by layer in execution order, each on the inputs it receives from
    the layers already mapped (so later layers compensate earlier errors)."""
    done: dict[str, torch.Tensor] = {}
    for name in list(_layer_inputs(actor, done, x)):
        inputs = _layer_inputs(actor, done, x)[name].double()
        h = (inputs.T @ inputs / inputs.shape[0]).numpy()
        st = states[name]
        cb, sc = _rounded(st)
        books = cb.double()[st.book_of_row].numpy()
        _set_mapping(st, gptq_indices(st.weight.double().numpy(), books, sc.double().numpy(), h))
        done[f"{name}.weight"] = st.decode(cb, sc).detach()


def jlcm_compress(
    actor: nn.Module, bits: int, calib: torch.Tensor, cfg: JLCMConfig | None = None
) -> tuple[dict[str, QuantizedLinear], dict[str, torch.Tensor], dict[str, Any]]:
    """Compress every Linear of ``actor`` with JLCM on calibration states ``calib`` [N, D].

    Returns the compressed layers (their ``bias`` the re-learned float32 biases), the other re-learned
    float32 parameters by path (LayerNorm gains and shifts; empty without ``tune_float``) and a log
    (calibration losses, per-layer widths and losses of the allocation, mapping moves). Runs on one
    torch thread (the tensors are tiny; more threads only contend).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _jlcm_compress(actor, bits, calib, cfg or JLCMConfig())
    finally:
        torch.set_num_threads(threads)


def _float_params(actor: nn.Module) -> dict[str, torch.Tensor]:
    """Learnable copies of the float32-stored parameters: Linear biases, LayerNorm gains and shifts."""
    out = {}
    for mname, m in actor.named_modules():
        if isinstance(m, (nn.Linear, nn.LayerNorm)):
            for pname, p in m.named_parameters(recurse=False):
                if pname != "weight" or isinstance(m, nn.LayerNorm):
                    out[f"{mname}.{pname}"] = p.detach().clone().requires_grad_(True)
    return out


def _jlcm_compress(
    actor: nn.Module, bits: int, calib: torch.Tensor, cfg: JLCMConfig
) -> tuple[dict[str, QuantizedLinear], dict[str, torch.Tensor], dict[str, Any]]:
    actor = actor.eval()
    calib = calib.detach().float().reshape(-1, calib.shape[-1])
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return action_loss(pred, target, cfg.loss_power)

    with torch.no_grad():
        target = actor(calib)  # [N, 4]
    eval_n = min(cfg.max_eval_states, calib.shape[0])
    eval_x, eval_y = calib[:eval_n], target[:eval_n]
    modules = linear_layers(actor)

    # 2-3: codebooks at every candidate width, then the per-layer widths within the budget
    widths = candidate_bits(bits, cfg.widths) if cfg.allocate else (bits,)
    per_width = {c: {n: _init_layer(n, m, c, cfg) for n, m in modules.items()} for c in widths}
    uniform = sum(_layer_bytes(st, bits) for st in per_width[bits].values())
    n_weights = sum(m.weight.numel() for m in modules.values())
    budget = uniform if cfg.budget_bits is None else int(cfg.budget_bits * n_weights) // 8
    log: dict[str, Any] = {"calib_states": int(calib.shape[0]), "uniform_bytes": uniform}
    if cfg.allocate:
        if cfg.init == "gptq":  # the sensitivities use GPTQ mappings on the float layer inputs
            inputs = _layer_inputs(actor, {}, eval_x[: cfg.hessian_states])
            for c in widths:
                for n, st in per_width[c].items():
                    cb, sc = _rounded(st)
                    x = inputs[n].double()
                    _set_mapping(st, gptq_indices(st.weight.double().numpy(), cb.double()[st.book_of_row].numpy(),
                                                  sc.double().numpy(), (x.T @ x / x.shape[0]).numpy()))
        alloc, sens = _allocate(actor, per_width, budget, eval_x, eval_y, loss_fn)
        log.update(budget_bytes=budget, layer_bits=alloc, layer_loss=sens)
    else:
        alloc = {n: bits for n in modules}
    states = {n: per_width[alloc[n]][n] for n in modules}
    del per_width

    # 4: initial mappings
    if cfg.init == "gptq":
        _gptq_init(actor, states, eval_x)

    # 5-6: joint learning
    params = [p for st in states.values() for p in (st.codebooks, st.log_scales) if p is not None]
    opt = torch.optim.Adam(params, lr=cfg.lr_codebook)
    floats = _float_params(actor) if cfg.tune_float else {}
    opt_f = torch.optim.Adam(list(floats.values()), lr=cfg.lr_float) if floats else None
    hess: dict[str, torch.Tensor] = {}
    moves = {"updates": 0, "tried": 0, "kept": 0}

    def weights(rounded: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, st in states.items():
            cb, s = _rounded(st) if rounded else (st.codebooks, st.scales())
            out[f"{name}.weight"] = st.decode(cb, s)
        return out

    def eval_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(functional_call(actor, {**weights(True), **floats}, (eval_x,)), eval_y))

    def snapshot() -> dict[str, Any]:
        return {
            "layers": {
                n: (st.indices().clone(), st.codebooks.detach().clone(),
                    None if st.log_scales is None else st.log_scales.detach().clone())
                for n, st in states.items()
            },
            "floats": {k: v.detach().clone() for k, v in floats.items()},
        }

    def proximal_update() -> None:
        """Step 6: the best predicted moves, tried one by one, each kept only if the loss drops."""
        fixed = {k: v.detach() for k, v in floats.items()}
        if not hess:
            hess.update(_gauss_newton_diag(actor, weights(False), fixed, eval_x[: cfg.hessian_states]))
        ws = {k: v.detach().requires_grad_(True) for k, v in weights(False).items()}
        loss = loss_fn(functional_call(actor, {**ws, **fixed}, (eval_x,)), eval_y)
        grads = torch.autograd.grad(loss, list(ws.values()))
        cands = []
        for (name, st), g in zip(states.items(), grads, strict=True):
            if st.idx is None:
                st.idx = st.indices().clone()
            gain, new = _proximal_moves(st, g, hess[f"{name}.weight"], cfg.window)
            vals, flat = torch.topk(gain.reshape(-1), min(cfg.max_moves, gain.numel()), largest=False)
            for v, f in zip(vals.tolist(), flat.tolist(), strict=True):
                if v < 0:
                    i, j = divmod(f, gain.shape[1])
                    cands.append((v, name, i, j, int(new[i, j])))
        cands.sort()
        current = eval_loss()
        moves["updates"] += 1
        for _, name, i, j, k in cands[: cfg.max_moves]:
            idx = states[name].idx
            old = int(idx[i, j])
            idx[i, j] = k
            moves["tried"] += 1
            trial = eval_loss()
            if trial < current:
                current = trial
                moves["kept"] += 1
            else:
                idx[i, j] = old

    init_loss = best_loss = eval_loss()
    best = snapshot()
    best_step = 0
    for step in range(1, cfg.steps + 1):
        decay = 0.5 * (1 + math.cos(math.pi * (step - 1) / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = cfg.lr_codebook * decay
        if opt_f is not None:
            for group in opt_f.param_groups:
                group["lr"] = cfg.lr_float * decay
        pick = torch.randint(0, calib.shape[0], (min(cfg.batch, calib.shape[0]),), generator=gen)
        x, y = calib[pick], target[pick]
        ws = weights(False)
        for w in ws.values():
            w.retain_grad()
        loss = loss_fn(functional_call(actor, {**ws, **floats}, (x,)), y)
        opt.zero_grad()
        if opt_f is not None:
            opt_f.zero_grad()
        loss.backward()
        opt.step()
        if opt_f is not None:
            opt_f.step()
        if cfg.mapping == "logits":
            for name, st in states.items():
                _mapping_step(st, ws[f"{name}.weight"].grad, cfg, cfg.lr_mapping * decay)
        elif step % cfg.map_every == 0:
            proximal_update()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            current = eval_loss()
            if current < best_loss:
                best_loss, best, best_step = current, snapshot(), step

    layers: dict[str, QuantizedLinear] = {}
    tuned = dict(best["floats"])
    for name, st in states.items():
        idx, cb, log_s = best["layers"][name]
        cb16 = to_f16(cb)
        s16 = None if log_s is None else to_f16(log_s.exp())
        groups = st.groups.numpy()
        idx_np = idx.numpy().astype(np.int64)
        bias = tuned.pop(f"{name}.bias", st.bias)
        layers[name] = QuantizedLinear(
            name, "palette", alloc[name], tuple(st.weight.shape), decode_palette(idx_np, cb16, groups, s16),
            None if bias is None else bias.detach().float().clone(),
            indices=idx_np, codebooks=cb16, group_scales=s16, groups=groups if st.num_groups > 1 else None,
            num_groups=st.num_groups,
        )
    log.update(init_loss=init_loss, best_loss=best_loss, best_step=best_step, config=cfg.model_dump())
    if cfg.mapping == "proximal":
        log["mapping_moves"] = moves
    return layers, {k: v.detach().float().clone() for k, v in tuned.items()}, log
