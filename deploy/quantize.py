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

from typing import Any

import numpy as np
import torch
from torch import nn

# The stored forms (what the C exporter writes) live in deploy.formats, below both this module and JLCM;
# their names stay importable from here.
from deploy.formats import (
    PALETTE_BITS,
    QuantizedActor,
    QuantizedLinear,
    count_other_params,
    decode_palette,
    kmeans_1d,
    linear_layers,
    nearest,
    pack_bits,
    packed_bytes,
    palette_storage,
    to_f16,
    unpack_bits,
)
from deploy.jlcm import JLCMConfig, jlcm_compress

__all__ = [
    "DEFAULT_BITS", "METHODS", "PALETTE_BITS", "SUPPORTED_BITS", "QuantizedActor", "QuantizedLinear",
    "check_method_bits", "count_other_params", "decode_palette", "kmeans_1d", "linear_layers", "nearest",
    "pack_bits", "packed_bytes", "palette_storage", "quantize_actor", "quantize_float32", "quantize_kmeans",
    "quantize_uniform", "to_f16", "unpack_bits",
]

METHODS: tuple[str, ...] = ("float32", "int8", "int4", "kmeans", "jlcm")
SUPPORTED_BITS: dict[str, tuple[int, ...]] = {
    "float32": (32,),
    "int8": (8,),
    "int4": (4,),
    "kmeans": (2, 3, 4, 8),
    "jlcm": (2, 3, 4, 8),
}
DEFAULT_BITS: dict[str, int] = {"float32": 32, "int8": 8, "int4": 4, "kmeans": 3, "jlcm": 3}


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
