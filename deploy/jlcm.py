"""JLCM: jointly learnable codebooks and mappings (Yvinec, Dapogny, Bailly, ICLR 2024), for our small actors.

The paper gives the method in outline only and has no public code; every choice below is ours,
hand-written (torch + numpy) and measured in the README's Deploy table.

Per ``nn.Linear`` weight W [out, in]:

1. **Row grouping.** Each row (output neuron) is described by the sorted quantiles of its weights at
   q = 0.05, 0.25, 0.5, 0.75, 0.95 (a 5-vector that captures both its scale and its shape). The rows
   are clustered into G = min(num_groups, out) groups by k-means on these vectors (k-means++ seeding
   from a fixed seed, then Lloyd). The paper re-orders neurons so that groups are contiguous and
   stores no mapping; in our policies a layer's outputs feed residuals, LayerNorm, the attention and
   shared embeddings, so a re-ordering would have to be applied to every consumer. We store a
   ceil(log2 G)-bit group id per row instead (packed, counted in ``grouping`` bytes: 2 bits per
   row, i.e. < 0.13 bits per weight for a 16-wide layer).
2. **Codebooks.** ``codebook="shared"`` (default): one codebook of K = 2^b entries per tensor and one
   scale per group, s_g = RMS of the group's weights; the codebook is the 1-D k-means of the
   normalised weights w / s_g(row). ``codebook="per_group"``: one k-means codebook per group, no
   scales. Codebook entries and scales are stored as float16. Mappings start at the nearest codeword.
3. **Joint learning** on calibration states x (observations recorded from rollouts): minimise the
   mean squared difference between the compressed actor's action means and the float actor's,
   L = mean ||actor_q(x) - clamp(actor(x), -1, 1)||^2 over minibatches (no cost where both sit beyond the
   same bound: the motors see the clamped command, see ``action_loss``). Codebook entries and log-scales get their
   exact gradients through the decoded weights W_hat = s_g c[idx] (Adam).
4. **Mappings: proximal straight-through update.** Each weight keeps logits l_o over a window of
   codewords m = k0 + o, o in [-r, r] around its initial index k0 (r = ``window``); its mapping is the
   arg-max slot (hard, in the forward pass). Logits start at l_o = -(w/s - c_m)^2 / (2 sigma^2), where
   sigma is the mean gap between adjacent codewords of the initial codebook. With G = dL/dW_hat and
   the current codeword c_k, the surrogate gradient of slot o is

       dL/dl_o := G * s * (c_m - c_k) * exp(-(c_m - c_k)^2 / (2 sigma^2))

   i.e. the straight-through first-order change of the loss when the weight moves to c_m, times a
   proximity weight that decreases with the codeword distance. The plain STE (``proximal=False``:
   weight 1) scores a codeword in proportion to its distance, so the far end of the codebook always
   wins a consistent gradient; the Gaussian weight makes the search proximal (neighbouring codewords
   first). The update is SGD with momentum on the logits, the step normalised per layer by the RMS of
   G * s * sigma, so ``lr_mapping`` is in logit units per step whatever the layer's gradient scale.
5. The full calibration loss is measured every ``eval_every`` steps with float16-rounded codebooks
   and scales; the best state (the k-means initialisation included) is kept, so JLCM is never worse
   than its own initialisation on the calibration set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.func import functional_call

from deploy.quantize import QuantizedLinear, decode_palette, kmeans_1d, linear_layers, nearest, to_f16

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class JLCMConfig(BaseModel):
    """Settings of :func:`jlcm_compress` (defaults are the ones measured in the README)."""

    model_config = ConfigDict(extra="forbid")

    num_groups: int = Field(4, ge=1, description="row groups per layer (G)")
    codebook: Literal["shared", "per_group"] = "shared"
    steps: int = Field(300, ge=0, description="joint-learning steps")
    batch: int = Field(512, ge=1)
    lr_codebook: float = Field(2e-3, gt=0, description="Adam step on codebook entries and log-scales")
    lr_mapping: float = Field(0.05, gt=0, description="normalised SGD step on mapping logits")
    momentum: float = Field(0.9, ge=0, lt=1)
    window: int = Field(3, ge=1, description="codewords reachable on each side of the initial index")
    proximal: bool = Field(True, description="False: plain straight-through weight (ablation)")
    eval_every: int = Field(25, ge=1)
    max_eval_states: int = Field(4096, ge=1)
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

    def scales(self) -> torch.Tensor:
        """Per-row scale [out] (ones in per-group mode)."""
        if self.log_scales is None:
            return torch.ones(self.weight.shape[0])
        return self.log_scales.exp()[self.groups]

    def indices(self) -> torch.Tensor:
        """Current hard mapping [out, in]."""
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


def _rounded(st: _LayerState) -> tuple[torch.Tensor, torch.Tensor]:
    """float16-rounded codebooks [C, K] and per-row scales [out] (the stored values)."""
    cb = torch.from_numpy(to_f16(st.codebooks).astype(np.float32))
    if st.log_scales is None:
        return cb, torch.ones(st.weight.shape[0])
    s = torch.from_numpy(to_f16(st.log_scales.exp()).astype(np.float32))
    return cb, s[st.groups]


def _mapping_step(st: _LayerState, grad_w: torch.Tensor, cfg: JLCMConfig) -> None:
    """The proximal straight-through update of the mapping logits (module docstring, step 4)."""
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
        st.logits.sub_(cfg.lr_mapping * st.momentum)


def action_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error against the float actor's actions as the motors see them (clamped to [-1, 1]).

    The error is measured from the clamped target; a prediction beyond a bound that the target also
    sits at (or beyond) costs nothing, since both clamp to the same command.
    """
    t = target.clamp(-1.0, 1.0)
    err = pred - t
    err = torch.where(((t >= 1.0) & (pred > 1.0)) | ((t <= -1.0) & (pred < -1.0)), torch.zeros_like(err), err)
    return (err**2).mean()


def jlcm_compress(
    actor: nn.Module, bits: int, calib: torch.Tensor, cfg: JLCMConfig | None = None
) -> tuple[dict[str, QuantizedLinear], dict[str, Any]]:
    """Compress every Linear of ``actor`` with JLCM on calibration states ``calib`` [N, D].

    Returns the compressed layers and a training log (initial / final calibration loss, steps). Runs
    on one torch thread (the tensors are tiny; more threads only contend).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _jlcm_compress(actor, bits, calib, cfg or JLCMConfig())
    finally:
        torch.set_num_threads(threads)


def _jlcm_compress(
    actor: nn.Module, bits: int, calib: torch.Tensor, cfg: JLCMConfig
) -> tuple[dict[str, QuantizedLinear], dict[str, Any]]:
    actor = actor.eval()
    calib = calib.detach().float().reshape(-1, calib.shape[-1])
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        target = actor(calib)  # [N, 4]
    eval_n = min(cfg.max_eval_states, calib.shape[0])
    eval_x, eval_y = calib[:eval_n], target[:eval_n]
    states = {name: _init_layer(name, m, bits, cfg) for name, m in linear_layers(actor).items()}
    params = [p for st in states.values() for p in (st.codebooks, st.log_scales) if p is not None]
    opt = torch.optim.Adam(params, lr=cfg.lr_codebook)

    def weights(rounded: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, st in states.items():
            cb, s = _rounded(st) if rounded else (st.codebooks, st.scales())
            out[f"{name}.weight"] = st.decode(cb, s)
        return out

    def eval_loss() -> float:
        with torch.no_grad():
            pred = functional_call(actor, weights(True), (eval_x,))
            return float(action_loss(pred, eval_y))

    def snapshot() -> dict[str, tuple[torch.Tensor, ...]]:
        return {
            n: (st.indices().clone(), st.codebooks.detach().clone(),
                None if st.log_scales is None else st.log_scales.detach().clone())
            for n, st in states.items()
        }

    init_loss = best_loss = eval_loss()
    best = snapshot()
    best_step = 0
    for step in range(1, cfg.steps + 1):
        pick = torch.randint(0, calib.shape[0], (min(cfg.batch, calib.shape[0]),), generator=gen)
        x, y = calib[pick], target[pick]
        ws = weights(False)
        for w in ws.values():
            w.retain_grad()
        loss = action_loss(functional_call(actor, ws, (x,)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for name, st in states.items():
            _mapping_step(st, ws[f"{name}.weight"].grad, cfg)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            current = eval_loss()
            if current < best_loss:
                best_loss, best, best_step = current, snapshot(), step
    layers: dict[str, QuantizedLinear] = {}
    for name, st in states.items():
        idx, cb, log_s = best[name]
        cb16 = to_f16(cb)
        s16 = None if log_s is None else to_f16(log_s.exp())
        groups = st.groups.numpy()
        idx_np = idx.numpy().astype(np.int64)
        layers[name] = QuantizedLinear(
            name, "palette", bits, tuple(st.weight.shape), decode_palette(idx_np, cb16, groups, s16), st.bias,
            indices=idx_np, codebooks=cb16, group_scales=s16, groups=groups if st.num_groups > 1 else None,
            num_groups=st.num_groups,
        )
    info = {
        "calib_states": int(calib.shape[0]), "init_loss": init_loss, "best_loss": best_loss, "best_step": best_step,
        "config": cfg.model_dump(),
    }
    return layers, info
