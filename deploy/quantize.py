"""Weight compression of a policy's actor: float32, uniform int8 / int4 per channel, k-means palettisation, JLCM.

    from deploy.quantize import quantize_actor
    q = quantize_actor(policy.actor, "jlcm", bits=3, calib=states)   # states [N, D] (JLCM only)
    q.dequantized(policy.actor)   # a copy of the actor whose Linear weights are the decoded values
    q.accounting()                # bytes per layer: indices, codebooks, scales, grouping data, biases

Only the weight matrices of ``nn.Linear`` layers are compressed; biases and LayerNorm parameters stay
float32 and are counted separately. The storage formats match the C kernels of deploy/export_c.py
byte for byte, and the accounting counts every index, codebook, scale and group id.

Design note (the storage formats, what is counted): docs/design/quantize.md.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

METHODS: tuple[str, ...] = ("float32", "int8", "int4", "kmeans", "jlcm")
SUPPORTED_BITS: dict[str, tuple[int, ...]] = {
    "float32": (32,),
    "int8": (8,),
    "int4": (4,),
    "kmeans": (2, 3, 4, 8),
    "jlcm": (2, 3, 4, 8),
}
DEFAULT_BITS: dict[str, int] = {"float32": 32, "int8": 8, "int4": 4, "kmeans": 3, "jlcm": 3}
PALETTE_BITS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)  # index widths the C palette kernels decode


def check_method_bits(method: str, bits: int | None) -> int:
    """Validate ``method`` and ``bits`` (None = the method's default); returns the bit width."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {', '.join(METHODS)}")
    if bits is None:
        return DEFAULT_BITS[method]
    allowed = SUPPORTED_BITS[method]
    if bits not in allowed:
        raise ValueError(f"bits={bits} is not supported by method {method!r}; allowed: {', '.join(map(str, allowed))}")
    return bits


def packed_bytes(count: int, bits: int) -> int:
    """Bytes of ``count`` values of ``bits`` bits packed back to back (one bit stream)."""
    return (count * bits + 7) // 8


def palette_storage(out: int, inp: int, bits: int, codebook_entries: int, num_scales: int,
                    num_groups: int) -> dict[str, int]:
    """Bytes of a palette-coded weight [out, inp]: packed indices, fp16 codebook entries and group scales,
    and the packed group id of each row (none with a single group)."""
    group_bits = 0 if num_groups <= 1 else math.ceil(math.log2(num_groups))
    return {"indices": packed_bytes(out * inp, bits), "codebooks": 2 * codebook_entries, "scales": 2 * num_scales,
            "grouping": packed_bytes(out, group_bits)}


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative ints (< 2^bits) LSB-first into one byte stream (the C readers' order)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size and (v.min() < 0 or v.max() >= (1 << bits)):
        raise ValueError(f"values out of range for {bits}-bit packing")
    bit_matrix = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).ravel()
    pad = (-bit_matrix.size) % 8
    bit_matrix = np.concatenate([bit_matrix, np.zeros(pad, np.uint8)])
    return np.packbits(bit_matrix.reshape(-1, 8), axis=1, bitorder="little").ravel()


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`."""
    bit_matrix = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: count * bits].reshape(count, bits)
    return (bit_matrix.astype(np.int64) << np.arange(bits)).sum(1)


def kmeans_1d(values: np.ndarray, k: int, iters: int = 60) -> np.ndarray:
    """Sorted 1-D k-means centres (float64) of ``values``: quantile initialisation, Lloyd iterations.

    Deterministic (no random restarts). Empty clusters keep their previous centre.
    """
    x = np.sort(np.asarray(values, np.float64).ravel())
    k_eff = min(k, np.unique(x).size)
    centres = np.quantile(x, (np.arange(k_eff) + 0.5) / k_eff)
    for _ in range(iters):
        edges = (centres[1:] + centres[:-1]) / 2
        lab = np.searchsorted(edges, x)
        sums = np.bincount(lab, weights=x, minlength=k_eff)
        counts = np.bincount(lab, minlength=k_eff)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        new = np.sort(new)
        if np.allclose(new, centres, rtol=0, atol=1e-12):
            break
        centres = new
    if k_eff < k:  # fewer distinct values than codewords: pad with copies (unused entries)
        centres = np.concatenate([centres, np.full(k - k_eff, centres[-1])])
    return centres


def nearest(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centres`` for each value."""
    edges = (centres[1:] + centres[:-1]) / 2
    return np.searchsorted(edges, values)


def to_f16(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Round to IEEE float16 (the storage type of codebooks and group scales)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(np.float16)


@dataclass
class QuantizedLinear:
    """The stored form of one ``nn.Linear`` weight [out, in] and its decoded float32 values.

    ``kind`` is the C kernel family: ``float32``, ``int`` (int8/int4 with per-row float32 scales) or
    ``palette`` (b-bit indices into float16 codebooks, optional float16 group scales, optional group ids).
    """

    name: str
    kind: str
    bits: int
    shape: tuple[int, int]
    weight: torch.Tensor  # decoded float32 [out, in], exactly the values the C code multiplies with
    bias: torch.Tensor | None
    q: np.ndarray | None = None  # int8/int4 values [out, in]
    row_scales: np.ndarray | None = None  # float32 [out] (int8/int4)
    indices: np.ndarray | None = None  # palette indices [out, in]
    codebooks: np.ndarray | None = None  # float16 [C, 2^b]
    group_scales: np.ndarray | None = None  # float16 [G] (JLCM shared codebook) or None
    groups: np.ndarray | None = None  # group id per row [out] (None: a single group)
    num_groups: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_bits(self) -> int:
        """Bits per stored group id (0 with a single group)."""
        return 0 if self.num_groups <= 1 else math.ceil(math.log2(self.num_groups))

    def storage(self) -> dict[str, int]:
        """Bytes by component: indices (or raw weights), codebooks, scales, grouping, bias."""
        out, inp = self.shape
        n = out * inp
        parts = {"indices": 0, "codebooks": 0, "scales": 0, "grouping": 0}
        if self.kind == "float32":
            parts["indices"] = 4 * n
        elif self.kind == "int":
            parts["indices"] = packed_bytes(n, self.bits)
            parts["scales"] = 4 * out
        else:
            scales = int(self.group_scales.size) if self.group_scales is not None else 0
            parts.update(palette_storage(out, inp, self.bits, int(self.codebooks.size), scales, self.num_groups))
        parts["weight"] = sum(parts.values())
        parts["bias"] = 4 * out if self.bias is not None else 0
        return parts


@dataclass
class QuantizedActor:
    """Every compressed Linear of an actor (by module path), with the method's settings."""

    method: str
    bits: int
    layers: dict[str, QuantizedLinear]
    other_params: int  # float32 scalars outside the Linear weights that the C code stores (biases excluded)
    info: dict[str, Any] = field(default_factory=dict)
    # float32 parameters (path -> value) that the quantiser re-learned besides the Linear biases (LayerNorm
    # gains / shifts); stored as float32 like the originals, so no byte changes
    overrides: dict[str, torch.Tensor] = field(default_factory=dict)

    def dequantized(self, actor: nn.Module) -> nn.Module:
        """A deep copy of ``actor`` with the stored parameters: decoded Linear weights, the stored biases
        and any re-learned float32 parameter (``overrides``)."""
        out = copy.deepcopy(actor)
        modules = dict(out.named_modules())
        params = dict(out.named_parameters())
        with torch.no_grad():
            for name, layer in self.layers.items():
                modules[name].weight.copy_(layer.weight)
                if layer.bias is not None:
                    modules[name].bias.copy_(layer.bias)
            for name, value in self.overrides.items():
                params[name].copy_(value)
        return out.eval()

    def accounting(self) -> dict[str, Any]:
        """Per-layer and total bytes, and bits per weight (see the module docstring for the definitions)."""
        per_layer = {}
        weights = weight_bytes = bias_bytes = 0
        for name, layer in self.layers.items():
            st = layer.storage()
            n = layer.shape[0] * layer.shape[1]
            per_layer[name] = {**st, "weights": n, "index_bits": layer.bits, "bits_per_weight": 8 * st["weight"] / n}
            weights += n
            weight_bytes += st["weight"]
            bias_bytes += st["bias"]
        other_bytes = bias_bytes + 4 * self.other_params
        n_params = weights + bias_bytes // 4 + self.other_params
        return {
            "layers": per_layer,
            "num_weights": weights,
            "num_params": n_params,
            "weight_bytes": weight_bytes,
            "float32_weight_bytes": 4 * weights,
            "other_bytes": other_bytes,
            "param_bytes": weight_bytes + other_bytes,
            "float32_param_bytes": 4 * n_params,
            "bits_per_weight": 8 * weight_bytes / weights,
            "bits_per_param": 8 * (weight_bytes + other_bytes) / n_params,
            "weight_compression": 4 * weights / weight_bytes,
        }


def linear_layers(actor: nn.Module) -> dict[str, nn.Linear]:
    """The actor's ``nn.Linear`` modules by path, in registration order."""
    return {name: m for name, m in actor.named_modules() if isinstance(m, nn.Linear)}


def count_other_params(actor: nn.Module) -> int:
    """float32 scalars the C code stores besides Linear weights and biases (LayerNorm gains and shifts)."""
    return sum(p.numel() for m in actor.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters())


def _bias(layer: nn.Linear) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach().float().clone()


def quantize_float32(name: str, layer: nn.Linear) -> QuantizedLinear:
    """The uncompressed reference."""
    w = layer.weight.detach().float().clone()
    return QuantizedLinear(name, "float32", 32, tuple(w.shape), w, _bias(layer))


def quantize_uniform(name: str, layer: nn.Linear, bits: int) -> QuantizedLinear:
    """Symmetric per-row uniform quantisation (int8 or int4), float32 scale per row."""
    w = layer.weight.detach().double()
    qmax = (1 << (bits - 1)) - 1
    amax = w.abs().amax(1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).float()  # [out]
    q = torch.round(w / scale.double().unsqueeze(1)).clamp_(-qmax, qmax)
    deq = q.float() * scale.unsqueeze(1)  # float32 product: what the C code's s * sum(q x) approximates
    return QuantizedLinear(
        name, "int", bits, tuple(w.shape), deq, _bias(layer), q=q.numpy().astype(np.int64), row_scales=scale.numpy()
    )


def decode_palette(
    indices: np.ndarray, codebooks: np.ndarray, groups: np.ndarray | None, group_scales: np.ndarray | None
) -> torch.Tensor:
    """Decoded float32 weight [out, in] = codebook[g(row)][index] * scale[g(row)] (float32 arithmetic)."""
    out = indices.shape[0]
    g = np.zeros(out, np.int64) if groups is None else groups
    cb = codebooks.astype(np.float32)
    book = g if cb.shape[0] > 1 else np.zeros_like(g)
    w = cb[book[:, None], indices]  # [out, in]
    if group_scales is not None:
        w = (w * group_scales.astype(np.float32)[g][:, None]).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))


def quantize_kmeans(name: str, layer: nn.Linear, bits: int) -> QuantizedLinear:
    """Palettisation: one 2^b-entry codebook per tensor (1-D k-means), float16 entries."""
    w = layer.weight.detach().double().numpy()
    centres = to_f16(kmeans_1d(w, 1 << bits)).astype(np.float64)
    order = np.argsort(centres, kind="stable")
    centres = centres[order]
    idx = nearest(w, centres)
    cb = centres.astype(np.float16)[None, :]
    return QuantizedLinear(
        name, "palette", bits, w.shape, decode_palette(idx, cb, None, None), _bias(layer), indices=idx, codebooks=cb
    )


def quantize_actor(
    actor: nn.Module,
    method: str,
    bits: int | None = None,
    calib: torch.Tensor | None = None,
    **jlcm_kwargs: Any,
) -> QuantizedActor:
    """Compress every Linear weight of ``actor`` with ``method`` at ``bits`` (None = the method's default).

    ``calib``: observation states [N, D] on which JLCM matches the actor's outputs (required for jlcm,
    ignored otherwise). ``jlcm_kwargs`` go to :class:`deploy.jlcm.JLCMConfig`.
    """
    bits = check_method_bits(method, bits)
    layers = linear_layers(actor)
    if not layers:
        raise ValueError("the actor has no nn.Linear layer to compress")
    info: dict[str, Any] = {}
    if method == "jlcm":
        from deploy.jlcm import JLCMConfig, jlcm_compress

        if calib is None or calib.numel() == 0:
            raise ValueError(
                "method 'jlcm' needs a calibration set (observation states recorded from rollouts, e.g. "
                "deploy.calibration.record_states); none was given"
            )
        q_layers, overrides, info = jlcm_compress(actor, bits, calib, JLCMConfig(**jlcm_kwargs))
        return QuantizedActor(method, bits, q_layers, count_other_params(actor), info, overrides)
    elif method == "float32":
        q_layers = {n: quantize_float32(n, m) for n, m in layers.items()}
    elif method in ("int8", "int4"):
        q_layers = {n: quantize_uniform(n, m, bits) for n, m in layers.items()}
    else:
        q_layers = {n: quantize_kmeans(n, m, bits) for n, m in layers.items()}
    return QuantizedActor(method, bits, q_layers, count_other_params(actor), info)
