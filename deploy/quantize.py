"""Weight compression of a policy's actor: float32, uniform int8 / int4 per channel, k-means palettisation,
the calibrated baselines GPTQ and calibration-weighted k-means (deploy/gptq.py), JLCM.

    from deploy.quantize import quantize_actor
    q = quantize_actor(policy.actor, "jlcm", bits=3, calib=states)   # states [N, D] (jlcm, gptq, kmeans_w)
    q = quantize_actor(policy.actor, "gptq", bits=3, calib=states, allocate=True, tune_float=True)
    q.dequantized(policy.actor)   # a copy of the actor whose Linear weights are the decoded values
    q.accounting()                # bytes per layer: indices, codebooks, scales, grouping data, biases

Only the weight matrices of ``nn.Linear`` layers are compressed; biases and LayerNorm parameters stay
float32 and are counted separately. The storage formats match the C kernels of deploy/export_c.py
byte for byte, and the accounting counts every index, codebook, scale and group id.

Design note (the storage formats, what is counted): docs/design/quantize.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
from deploy.gptq import CalibratedConfig, gptq_compress, input_importance, kmeans_weighted_layer, tune_float
from deploy.jlcm import JLCMConfig, jlcm_compress

__all__ = [
    "CALIBRATED", "DEFAULT_BITS", "METHODS", "PALETTE_BITS", "SUPPORTED_BITS", "QuantizedActor", "QuantizedLinear",
    "check_method_bits", "count_other_params", "decode_palette", "kmeans_1d", "linear_layers", "nearest",
    "parse_method", "parse_network_methods",
    "pack_bits", "packed_bytes", "palette_storage", "quantize_actor", "quantize_float32", "quantize_kmeans",
    "quantize_networks", "quantize_uniform", "to_f16", "unpack_bits",
]

METHODS: tuple[str, ...] = ("float32", "int8", "int4", "kmeans", "kmeans_w", "gptq", "jlcm")
SUPPORTED_BITS: dict[str, tuple[int, ...]] = {
    "float32": (32,),
    "int8": (8,),
    "int4": (4,),
    "kmeans": (2, 3, 4, 8),
    "kmeans_w": (2, 3, 4, 8),
    "gptq": (2, 3, 4, 8),
    "jlcm": (2, 3, 4, 8),
}
DEFAULT_BITS: dict[str, int] = {"float32": 32, "int8": 8, "int4": 4, "kmeans": 3, "kmeans_w": 3, "gptq": 3, "jlcm": 3}
CALIBRATED: tuple[str, ...] = ("kmeans_w", "gptq", "jlcm")  # methods that need calibration states
MIN_NETWORK_STATES = 64  # fewest calibration states a gated network is compressed on


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


def parse_method(spec: str) -> tuple[str, int]:
    """``"jlcm:3"`` / ``"int8"`` -> (method, bits), checked, the method's default bits where none is given."""
    name, _, bits = spec.strip().partition(":")
    try:
        width = int(bits) if bits else None
    except ValueError:
        raise ValueError(f"{spec!r}: bits must be an integer, as in 'jlcm:3'") from None
    return name, check_method_bits(name, width)


def parse_network_methods(items: list[str] | None) -> dict[str, str] | None:
    """``["near=int8", "column=jlcm:4"]`` (``--network-method``) -> {"near": "int8", "column": "jlcm:4"}; None if
    empty. The names and methods are checked where they are used (:func:`quantize_networks`)."""
    out = {}
    for item in items or []:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            raise ValueError(f"--network-method {item!r}: expected NETWORK=METHOD[:BITS], e.g. near=int8")
        out[name.strip()] = spec.strip()
    return out or None


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
    per_network: bool = True,
    network_methods: Mapping[str, str] | None = None,
    **settings: Any,
) -> QuantizedActor:
    """Compress every Linear weight of ``actor`` with ``method`` at ``bits`` (None = the method's default).

    ``calib``: observation states [N, D] the calibrated methods fit to (required for jlcm, gptq and
    kmeans_w, and for ``tune_float=True``; ignored otherwise). ``settings`` go to
    :class:`deploy.jlcm.JLCMConfig` for jlcm and to :class:`deploy.gptq.CalibratedConfig` for the others
    (``tune_float``, and for gptq ``allocate``; see deploy/gptq.py). ``per_network``: an actor with gated
    networks (agents.close_range) is compressed one network at a time by the calibrated methods
    (:func:`quantize_networks`); False compresses it as one actor. ``network_methods``: such networks by name
    (``far``, ``near``, ``column``) -> ``"method[:bits]"`` of their own, e.g. ``{"near": "int8"}``
    (network by network only).
    """
    bits = check_method_bits(method, bits)
    if network_methods and not (per_network and hasattr(actor, "networks")):
        raise ValueError(f"network_methods={dict(network_methods)!r} needs an actor with gated networks "
                         "(agents.close_range) compressed network by network (per_network=True)")
    if per_network and (method in CALIBRATED or network_methods) and hasattr(actor, "networks"):
        return quantize_networks(actor, method, bits, calib, network_methods, **settings)
    layers = linear_layers(actor)
    if not layers:
        raise ValueError("the actor has no nn.Linear layer to compress")
    has_calib = calib is not None and calib.numel() > 0
    if method in CALIBRATED and not has_calib:
        raise ValueError(
            f"method {method!r} needs a calibration set (observation states recorded from rollouts, e.g. "
            "deploy.calibration.record_states); none was given"
        )
    info: dict[str, Any] = {}
    if method == "jlcm":
        q_layers, overrides, info = jlcm_compress(actor, bits, calib, JLCMConfig(**settings))
        return QuantizedActor(method, bits, q_layers, count_other_params(actor), info, overrides)
    cfg = CalibratedConfig(**settings)
    if cfg.allocate and method != "gptq":
        raise ValueError(f"allocate=True is supported by method 'gptq' (and jlcm) only, not {method!r}")
    if cfg.tune_float and not has_calib:
        raise ValueError(f"tune_float=True needs calibration states (calib); none was given for method {method!r}")
    if method == "float32":
        q_layers = {n: quantize_float32(n, m) for n, m in layers.items()}
    elif method in ("int8", "int4"):
        q_layers = {n: quantize_uniform(n, m, bits) for n, m in layers.items()}
    elif method == "kmeans":
        q_layers = {n: quantize_kmeans(n, m, bits) for n, m in layers.items()}
    elif method == "kmeans_w":
        imp = input_importance(actor, calib[: cfg.max_eval_states])
        q_layers = {n: kmeans_weighted_layer(n, m, bits, imp[n]) for n, m in layers.items()}
    else:
        q_layers, info = gptq_compress(actor, bits, calib, cfg)
    overrides: dict[str, torch.Tensor] = {}
    if cfg.tune_float:
        q_layers, overrides, tune_log = tune_float(actor, q_layers, calib, cfg)
        info.update(tune_log)
    if method in CALIBRATED or cfg.tune_float:
        info["config"] = cfg.model_dump()
    return QuantizedActor(method, bits, q_layers, count_other_params(actor), info, overrides)


def quantize_networks(actor: nn.Module, method: str, bits: int, calib: torch.Tensor | None,
                      network_methods: Mapping[str, str] | None = None, **settings: Any) -> QuantizedActor:
    """A gated actor (agents.close_range.CloseRangeActor) compressed network by network, each within its own
    ``bits`` budget: the far network on every calibration state, each gated network on the states its gate
    picks.

    Why: compressed as one actor, the gated networks count in the calibration loss only on the few states
    they fly (3-5 % of a policy's flight), so the width allocation gives their layers 1-3 bits and their
    errors are what touches columns and neighbours (docs/deploy.md, "The close-range policy, compressed").
    ``calib`` needs enough of each gated network's states (deploy.calibration.calibration_states adds them).
    The layers, re-learned float parameters and logs keep the actor's parameter names.

    ``network_methods`` gives named networks a method of their own (``{"near": "int8"}``): the near network
    flies the last 0.45 m before a neighbour, where a 3-bit copy's errors are neighbour contacts
    (docs/deploy.md), and int8 stores it in ~4.3 KB instead of JLCM 3-bit's ~1.6 KB.
    """
    nets = {prefix[:-1] or "far": (prefix, net) for prefix, net in actor.networks().items()}
    own = {name: parse_method(spec) for name, spec in (network_methods or {}).items()}
    unknown = sorted(set(own) - set(nets))
    if unknown:
        raise ValueError(f"network_methods names {unknown}; the actor's networks are: {', '.join(nets)}")
    calibrated = {own.get(name, (method, bits))[0] for name in nets} & set(CALIBRATED)
    gates: dict[str, torch.Tensor] = {}
    if calibrated:
        if calib is None or calib.numel() == 0:
            raise ValueError(f"method {', '.join(map(repr, sorted(calibrated)))} needs a calibration set; "
                             "none was given")
        calib = calib.reshape(-1, calib.shape[-1])
        with torch.no_grad():
            gates = actor.gates(calib)
    layers: dict[str, QuantizedLinear] = {}
    overrides: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {}
    for name, (prefix, net) in nets.items():
        net_method, net_bits = own.get(name, (method, bits))
        states, logged = None, {}
        if net_method in CALIBRATED:
            states = calib if not prefix else calib[gates[name]]
            if states.shape[0] < MIN_NETWORK_STATES:
                raise ValueError(
                    f"the {name} network's gate picks {states.shape[0]} of the {calib.shape[0]} calibration "
                    f"states, fewer than {MIN_NETWORK_STATES}: record more of them "
                    "(deploy.calibration.calibration_states) or compress the actor as one (per_network=False)"
                )
            logged = {"calib_states": int(states.shape[0])}
        # the settings belong to the actor's method (JLCMConfig / CalibratedConfig), not to a network's own
        q = quantize_actor(net, net_method, net_bits, calib=states, per_network=False,
                           **(settings if net_method == method else {}))
        layers.update({prefix + n: dataclasses.replace(ql, name=prefix + n) for n, ql in q.layers.items()})
        overrides.update({prefix + k: v for k, v in q.overrides.items()})
        info[name] = {"method": net_method, "bits": net_bits, **logged, **q.info}
    order = list(linear_layers(actor))  # the actor's own layer order (the C export walks it)
    return QuantizedActor(method, bits, {n: layers[n] for n in order}, count_other_params(actor),
                          {"networks": info}, overrides)
