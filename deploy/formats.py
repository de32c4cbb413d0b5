"""The stored forms of compressed Linear weights: bit packing, palettes, k-means codebooks, byte accounting.

What deploy/export_c.py writes byte for byte and what the reports count (indices, codebooks, scales,
group ids, biases): ``QuantizedLinear`` (one layer), ``QuantizedActor`` (every compressed layer of an
actor, its dequantised copy and its accounting) and the numpy helpers both quantisers share. The
methods that fill them are in deploy.quantize (float32, int8 / int4, k-means) and deploy.jlcm;
this module sits below both, so neither imports the other's caller. Formats: docs/design/quantize.md.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

PALETTE_BITS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)  # index widths the C palette kernels decode


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
