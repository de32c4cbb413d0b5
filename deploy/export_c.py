"""C99 code generator: a compressed actor -> policy.c + policy.h for a microcontroller (no dynamic memory).

    from deploy.export_c import generate_c
    files = generate_c(actor, quantized, golden_inputs, golden_outputs)   # {"policy.c": ..., "policy.h": ...}

Fills the templates of deploy/c/ (``@NAME@`` placeholders, see deploy/c/README.md) with const weight
tables in the actor's storage format, static buffers and the forward pass of a ``GaussianActor`` over
``SwarmAttentionEncoder`` or ``MLPEncoder``; any other layer is refused with its class and path.
Codebook weights are decoded while they are multiplied, never expanded to float32 matrices.

Design note (kernels, speed on the Cortex-M4F, what is supported, why hand-written):
docs/design/export_c.md.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import torch
from torch import nn

from deploy.quantize import QuantizedActor, QuantizedLinear, pack_bits

ACT_DIM = 4
# Placeholders of the templates in deploy/c/*.in: @NAME@, upper case (C itself never contains an @).
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


@functools.cache
def c_source(name: str) -> str:
    """The text of ``deploy/c/<name>`` (C source, header, linker script or ``.in`` template), read from
    the installed package (package data), so a wheel or a non-editable install finds it too."""
    return resources.files("deploy").joinpath("c", name).read_text(encoding="utf-8")


def fill_template(name: str, **values: object) -> str:
    """``deploy/c/<name>`` with every ``@KEY@`` replaced by ``str(values[KEY])`` in one pass (the filled-in
    text is not scanned again). A placeholder without a value or a value without a placeholder is an error."""
    text = c_source(name)
    found = set(_PLACEHOLDER.findall(text))
    if found != set(values):
        raise ValueError(f"template deploy/c/{name}: placeholders {sorted(found)}, values {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def _supported_types() -> tuple[type, ...]:
    from agents.close_range import ActionHead, CloseRangeActor
    from agents.layers import GaussianActor, MultiHeadAttention
    from agents.mlp import MLPEncoder
    from agents.swarm_attention import SwarmAttentionEncoder

    return (
        GaussianActor, CloseRangeActor, ActionHead, SwarmAttentionEncoder, MLPEncoder, MultiHeadAttention,
        nn.Sequential, nn.Linear, nn.Tanh, nn.ReLU, nn.LayerNorm,
    )


def check_supported(actor: nn.Module) -> None:
    """Raise ValueError naming the first layer (class and path) the exporter cannot translate to C."""
    from agents.layers import GaussianActor

    allowed = _supported_types()
    if not isinstance(actor, GaussianActor):
        raise ValueError(f"unsupported actor {type(actor).__name__}: the exporter expects agents.layers.GaussianActor")
    for name, module in actor.named_modules():
        if type(module) not in allowed:
            raise ValueError(
                f"unsupported layer {type(module).__name__} at actor.{name}; the C exporter supports "
                + ", ".join(t.__name__ for t in allowed)
            )
        if isinstance(module, nn.LayerNorm) and (not module.elementwise_affine or len(module.normalized_shape) != 1):
            raise ValueError(f"unsupported layer LayerNorm at actor.{name}: only affine 1-D LayerNorm is exported")


def _f(x: float) -> str:
    """A float32 literal that round-trips exactly."""
    v = float(np.float32(x))
    if not math.isfinite(v):
        raise ValueError(f"non-finite weight {v} cannot be exported")
    s = f"{v:.9g}"
    if "e" not in s and "." not in s:
        s += ".0"
    return s + "f"


def _array(ctype: str, name: str, values: list[str], per_line: int = 8, const: bool = True) -> str:
    lines = [", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line)] or ["0"]
    body = ",\n    ".join(lines)
    return f"static {'const ' if const else ''}{ctype} {name}[{max(len(values), 1)}] = {{\n    {body}\n}};\n"


def _half_words(a: np.ndarray) -> list[str]:
    return [f"0x{int(v):04x}u" for v in np.asarray(a, np.float16).ravel().view(np.uint16)]


def _padded(packed: np.ndarray) -> list[str]:
    """Bytes of a packed index stream plus INDEX_PAD zero bytes (the word-wise reader's overrun)."""
    return _bytes(np.concatenate([np.asarray(packed, np.uint8).ravel(), np.zeros(INDEX_PAD, np.uint8)]))


def _bytes(a: np.ndarray) -> list[str]:
    return [f"0x{int(v):02x}u" for v in np.asarray(a, np.uint8).ravel()]


@dataclass
class _Emitter:
    """Collects constants, static buffers and forward-pass statements."""

    q: QuantizedActor
    consts: list[str] = field(default_factory=list)
    ram: list[str] = field(default_factory=list)
    init: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    emitted: dict[str, str] = field(default_factory=dict)  # module path -> C symbol prefix
    macs: int = 0
    nbuf: int = 0

    def buffer(self, n: int, hint: str) -> str:
        name = f"buf{self.nbuf}_{hint}"
        self.nbuf += 1
        self.ram.append(f"static float {name}[{n}];\n")
        return name

    def weights(self, path: str, layer: nn.Linear) -> str:
        """Emit the tables of one Linear once; returns its C prefix."""
        if path in self.emitted:
            return self.emitted[path]
        prefix = f"L{len(self.emitted)}"
        self.emitted[path] = prefix
        ql: QuantizedLinear = self.q.layers[path]
        out, inp = ql.shape
        c = self.consts
        c.append(f"/* actor.{path}: Linear {inp} -> {out}, {ql.kind} {ql.bits}-bit */\n")
        if ql.bias is not None:
            c.append(_array("float", f"{prefix}_b", [_f(v) for v in ql.bias.tolist()]))
        if ql.kind == "float32":
            c.append(_array("float", f"{prefix}_w", [_f(v) for v in ql.weight.reshape(-1).tolist()]))
        elif ql.kind == "int":
            offset = 1 << (ql.bits - 1)
            c.append(_array("uint8_t", f"{prefix}_q", _padded(pack_bits(ql.q.ravel() + offset, ql.bits)), 16))
            c.append(_array("float", f"{prefix}_s", [_f(v) for v in ql.row_scales.tolist()]))
            lut = f"INT{ql.bits}_lut"
            if not any(lut in r for r in self.ram):
                self.ram.append(f"static float {lut}[{1 << ql.bits}];\n")
                self.init.append(f"    int_table({lut}, {ql.bits});\n")
        else:
            c.append(_array("uint8_t", f"{prefix}_idx", _padded(pack_bits(ql.indices.ravel(), ql.bits)), 16))
            c.append(_array("uint16_t", f"{prefix}_cb16", _half_words(ql.codebooks), 8))
            ncb = ql.codebooks.size
            self.ram.append(f"static float {prefix}_cb[{ncb}];\n")
            self.init.append(f"    half_table({prefix}_cb16, {prefix}_cb, {ncb});\n")
            if ql.group_scales is not None:
                c.append(_array("uint16_t", f"{prefix}_gs16", _half_words(ql.group_scales), 8))
                self.ram.append(f"static float {prefix}_gs[{ql.group_scales.size}];\n")
                self.init.append(f"    half_table({prefix}_gs16, {prefix}_gs, {ql.group_scales.size});\n")
            if ql.groups is not None and ql.group_bits:
                c.append(_array("uint8_t", f"{prefix}_gid", _bytes(pack_bits(ql.groups, ql.group_bits)), 16))
        return prefix

    def linear(self, path: str, layer: nn.Linear, x: str, y: str, count: int = 1, xs: int = 0, ys: int = 0) -> None:
        """y + n * ys = layer(x + n * xs) for n < count, with the layer's storage format; up to MAX_TOKENS
        inputs share one kernel call (each weight decoded once)."""
        p = self.weights(path, layer)
        ql = self.q.layers[path]
        out, inp = ql.shape
        self.macs += out * inp * count
        b = f"{p}_b" if ql.bias is not None else "0"
        if ql.kind == "float32":
            name, args = "linear_f32", f"{p}_w, {b}"
        elif ql.kind == "int":
            name, args = f"linear_pal{ql.bits}", f"{p}_q, INT{ql.bits}_lut, 0u, 0, 0, 0u, 0, {p}_s, {b}"
        else:
            k = 1 << ql.bits
            gid = f"{p}_gid" if ql.groups is not None and ql.group_bits else "0"
            gs = f"{p}_gs" if ql.group_scales is not None else "0"
            per_group = 1 if ql.codebooks.shape[0] > 1 else 0
            name = f"linear_pal{ql.bits}"
            args = f"{p}_idx, {p}_cb, {k}u, {per_group}, {gid}, {ql.group_bits}u, {gs}, 0, {b}"
        done = 0
        while done < count:
            t = min(MAX_TOKENS, count - done)
            xi = x if done == 0 else f"{x} + {done * xs}"
            yi = y if done == 0 else f"{y} + {done * ys}"
            io = f"{xi}, {yi}" if t == 1 else f"{xi}, {xs}, {yi}, {ys}"
            self.body.append(f"    {name}_t{t}({args}, {io}, {out}, {inp});\n")
            done += t

    def mlp(self, path: str, seq: nn.Sequential, x: str, width: int, hint: str, count: int = 1, xs: int = 0,
            out: str | None = None) -> tuple[str, int]:
        """Emit a Sequential of Linear / Tanh / ReLU applied to ``count`` inputs x + n * xs (all layers
        batched); returns (output buffer: count rows of width, contiguous, width). ``out``: where the last
        Linear writes (default: a new buffer); a trailing activation then runs in place there."""
        children = list(seq.named_children())
        last_linear = max((n for n, (_, m) in enumerate(children) if isinstance(m, nn.Linear)), default=-1)
        for n, (idx, module) in enumerate(children):
            sub = f"{path}.{idx}"
            if isinstance(module, nn.Linear):
                w = module.out_features
                y = out if (out is not None and n == last_linear) else self.buffer(count * w, hint)
                self.linear(sub, module, x, y, count, xs, w)
                x, width, xs = y, w, w
            elif isinstance(module, nn.Tanh):
                self.body.append(f"    act_tanh({x}, {count * width});\n")
            elif isinstance(module, nn.ReLU):
                self.body.append(f"    act_relu({x}, {count * width});\n")
            else:  # check_supported ran before; this is a nested container we do not flatten
                raise ValueError(f"unsupported layer {type(module).__name__} at actor.{sub} inside an MLP")
        return x, width


# Bits per index -> indices decoded from one 32-bit word: every row starts at a bit offset that is a
# multiple of gcd(bits, 8), so a word loaded at the row's byte holds N whole indices after the shift.
PALETTE_CHUNK = {1: 25, 2: 13, 3: 8, 4: 7, 5: 5, 6: 4, 8: 4}
# Bytes of zero padding after every packed index array: the word-wise reader loads 4 bytes at a time.
INDEX_PAD = 4


MAX_TOKENS = 3  # inputs one kernel call multiplies by the same weights (decoded once per weight)


def _kernel_args(t: int) -> tuple[str, str, str]:
    """(x / y parameters, per-token pointer set-up, accumulator declarations) of a t-input kernel."""
    if t == 1:
        return "const float *x, float *y", "", "float s0 = 0.0f;"
    params = "const float *x, int xs, float *y, int ys"
    setup = "".join(f"    const float *x{n} = x + {n} * xs;\n" for n in range(1, t))
    return params, setup, "float " + ", ".join(f"s{n} = 0.0f" for n in range(t)) + ";"


def _xin(n: int, j: str) -> str:
    return f"x[{j}]" if n == 0 else f"x{n}[{j}]"


def _store(t: int, scale: str) -> str:
    out = []
    for n in range(t):
        y = "y[i]" if n == 0 else f"y[{n} * ys + i]"
        out.append(f"        {y} = {scale.format(s=f's{n}')} + (b ? b[i] : 0.0f);\n")
    return "".join(out)


def _f32_kernel(t: int) -> str:
    """linear_f32_t<t>: y_n = W x_n + b for t inputs x_n (fused multiply-add, in order of j)."""
    params, setup, acc = _kernel_args(t)
    body4 = "".join(
        f"            w = row[j + {k}];\n" + "".join(f"            s{n} = fmaf(w, {_xin(n, f'j + {k}')}, s{n});\n"
                                                   for n in range(t))
        for k in range(4)
    )
    tail = "".join(f"            s{n} = fmaf(w, {_xin(n, 'j')}, s{n});\n" for n in range(t))
    return fill_template("linear_f32.c.in", T=t, PARAMS=params, SETUP=setup, ACC=acc, BODY4=body4, TAIL=tail,
                         STORE=_store(t, "{s}"))


def _palette_kernel(bits: int, t: int) -> str:
    """linear_pal<bits>_t<t>: codebook (or integer lookup-table) weights, decoded one 32-bit word at a time."""
    n, mask = PALETTE_CHUNK[bits], (1 << bits) - 1
    params, setup, acc = _kernel_args(t)
    shift = "" if bits % 8 == 0 else "            w >>= (p & 7u);\n"
    unrolled = "".join(
        f"            c = book[{'w' if k == 0 else f'(w >> {k * bits}u)'} & {mask}u];\n"
        + "".join(f"            s{m} = fmaf(c, {_xin(m, f'j + {k}')}, s{m});\n" for m in range(t))
        for k in range(n)
    )
    tail = "".join(f"                s{m} = fmaf(c, {_xin(m, 'j')}, s{m});\n" for m in range(t))
    return fill_template("linear_pal.c.in", BITS=bits, N=n, INDEX_PAD=INDEX_PAD, T=t, PARAMS=params, SETUP=setup,
                         ACC=acc, SHIFT=shift, UNROLLED=unrolled, MASK=mask, TAIL=tail, WORD_BITS=n * bits,
                         STORE=_store(t, "{s} * f"))


# The generated linear kernels (one per storage format and token count), then the hand-written rest
# (deploy/c/kernels.c.in: half floats, integer tables, tanh, relu, LayerNorm, attention).
LINEAR_KERNELS = "".join(_f32_kernel(t) for t in range(1, MAX_TOKENS + 1)) + "".join(
    _palette_kernel(b, t) for b in sorted(PALETTE_CHUNK) for t in range(1, MAX_TOKENS + 1))
KERNELS = fill_template("kernels.c.in", LINEAR_KERNELS=LINEAR_KERNELS)


def _used_kernels(body: str) -> str:
    """The kernels the forward pass calls (unused static functions would trip -Werror)."""
    chunks = KERNELS.split("\nstatic ")
    out = [chunks[0]]
    for chunk in chunks[1:]:
        name = chunk.split("(", 1)[0].split()[-1]
        needed = f"{name}(" in body or (name == "half_to_float" and "half_table(" in body)
        if needed:
            out.append(chunk)
    return "\nstatic ".join(out)


def _emit_attention_encoder(em: _Emitter, enc: nn.Module, obs: str, path: str = "encoder") -> tuple[str, int]:
    """SwarmAttentionEncoder.forward (the actor's module at ``path``), statement by statement; returns
    (feature buffer, width)."""
    lay = enc.layout
    ln = "LN" if path == "encoder" else path.replace(".", "_").upper() + "_LN"
    s, k, nd = lay.self_dim, lay.num_neighbors, lay.neighbour_dim
    e_self, e = em.mlp(f"{path}.self_embed", enc.self_embed, obs, s, "self")
    # all tokens (neighbours, then the obstacle patch) land in one [t][e] array, so the shared-weight
    # layers (neighbour MLP, key and value projections) run once over several inputs
    t = (k if enc.neighbour_embed is not None else 0) + (1 if enc.obstacle_embed is not None else 0)
    tok = em.buffer(max(t, 1) * e, "tokens")
    nt = 0
    if enc.neighbour_embed is not None and k > 0:
        em.mlp(f"{path}.neighbour_embed", enc.neighbour_embed, f"obs + {s}", nd, "nb", count=k, xs=nd, out=tok)
        nt = k
    if enc.obstacle_embed is not None:
        off = s + k * nd
        em.mlp(f"{path}.obstacle_embed", enc.obstacle_embed, f"obs + {off}", lay.obstacle_dim, "obst",
               out=tok if nt == 0 else f"{tok} + {nt * e}")
        nt += 1
    ctx = em.buffer(e, "ctx")
    norm = enc.norm
    em.consts.append(f"/* actor.{path}.norm: LayerNorm {e} (eps {norm.eps}) */\n")
    em.consts.append(_array("float", f"{ln}_g", [_f(v) for v in norm.weight.detach().tolist()]))
    em.consts.append(_array("float", f"{ln}_b", [_f(v) for v in norm.bias.detach().tolist()]))
    if enc.attention is not None:
        att = enc.attention
        h, hd, t = att.num_heads, att.head_dim, nt
        width = h * hd
        q = em.buffer(width, "q")
        keys = em.buffer(t * width, "keys")
        values = em.buffer(t * width, "values")
        mixed = em.buffer(width, "mixed")
        attended = em.buffer(e, "attended")
        scratch = em.buffer(t, "weights")
        em.linear(f"{path}.attention.q_proj", att.q_proj, e_self, q)
        em.linear(f"{path}.attention.k_proj", att.k_proj, tok, keys, t, e, width)
        em.linear(f"{path}.attention.v_proj", att.v_proj, tok, values, t, e, width)
        em.body.append(f"    attention({q}, {keys}, {values}, {mixed}, {scratch}, {t}, {h}, {hd});\n")
        em.macs += 2 * t * width
        em.linear(f"{path}.attention.out_proj", att.out_proj, mixed, attended)
        em.body.append(f"    for (i = 0; i < {e}; i++) {{\n        {attended}[i] += {e_self}[i];\n    }}\n")
        em.body.append(f"    layer_norm({attended}, {ln}_g, {ln}_b, {ctx}, {e}, {_f(norm.eps)});\n")
    else:
        em.body.append(f"    layer_norm({e_self}, {ln}_g, {ln}_b, {ctx}, {e}, {_f(norm.eps)});\n")
    cat = em.buffer(2 * e, "concat")
    em.body.append(
        f"    for (i = 0; i < {e}; i++) {{\n        {cat}[i] = {e_self}[i];\n"
        f"        {cat}[{e} + i] = {ctx}[i];\n    }}\n"
    )
    return em.mlp(f"{path}.head", enc.head, cat, 2 * e, "head")


def _layout_doc(actor: nn.Module) -> str:
    lay = getattr(actor.encoder, "layout", None)
    if lay is None:
        return " *   (layout unknown: the policy's encoder does not record one)\n"
    s, k, nd, o = lay.self_dim, lay.num_neighbors, lay.neighbour_dim, lay.obstacle_dim
    lines = [
        " *   [0, 3)    p - goal: position relative to the goal, world frame, m",
        " *   [3, 6)    v: velocity, world frame, m/s",
        " *   [6, 15)   R: rotation matrix body -> world, flattened row-major",
        " *   [15, 18)  omega: body angular rate, rad/s",
        f" *   [18, {s})   z: height above the floor, m",
    ]
    for j in range(k):
        a = s + j * nd
        lines.append(f" *   [{a}, {a + nd})  neighbour {j}: p_j - p (3), v_j - v (3), ranked nearest first")
    lines.append(f" *   [{s + k * nd}, {s + k * nd + o})  3 x 3 SDF patch around the drone (m, clipped, row-major)")
    return "\n".join(lines) + "\n"


def generate_c(
    actor: nn.Module,
    quantized: QuantizedActor,
    golden_inputs: torch.Tensor,
    golden_outputs: torch.Tensor,
    fallback_action: float = 0.0,
    self_test_tol: float = 1e-4,
) -> tuple[dict[str, str], dict[str, int]]:
    """Generate ``policy.c`` and ``policy.h``; returns (files, stats with ``macs``).

    golden_inputs [G, D] / golden_outputs [G, 4]: the self-test's vectors (outputs of the dequantised
    torch actor, clamped to [-1, 1]). ``fallback_action``: the command of every motor for non-finite
    inputs (e.g. the hover command 2 / thrust_to_weight - 1).
    """
    from agents.close_range import CloseRangeActor
    from agents.layers import GaussianActor
    from agents.mlp import MLPEncoder
    from agents.swarm_attention import SwarmAttentionEncoder

    check_supported(actor)
    assert isinstance(actor, GaussianActor)
    if quantized.overrides:  # re-learned float32 parameters (LayerNorm) are emitted from the stored values
        actor = quantized.dequantized(actor)
    enc = actor.encoder
    obs_dim = int(golden_inputs.shape[-1])
    em = _Emitter(quantized)
    out = em.buffer(ACT_DIM, "mean")

    def network(prefix: str, encoder: nn.Module, mean: nn.Linear) -> None:
        """One encoder + action mean, the actor's modules under ``prefix`` ("", "near.", "column."), writing
        ``out``."""
        if isinstance(encoder, SwarmAttentionEncoder):
            feat, _ = _emit_attention_encoder(em, encoder, "obs", f"{prefix}encoder")
        elif isinstance(encoder, MLPEncoder):
            feat, _ = em.mlp(f"{prefix}encoder.net", encoder.net, "obs", obs_dim, f"{prefix.rstrip('.')}mlp")
        else:  # pragma: no cover - check_supported refuses it first
            raise ValueError(f"unsupported encoder {type(encoder).__name__}")
        em.linear(f"{prefix}mean", mean, feat, out)

    kind = type(enc).__name__
    if isinstance(actor, CloseRangeActor):
        # The gates as branches: each call runs one network (MACs: the largest branch, plus the gate).
        lay = actor.layout
        s0, nd, r = lay.self_dim, lay.neighbour_dim, actor.close_range
        t = actor.close_time
        ahead = ("" if t is None else  # the distance close_time s ahead at the closing speed
                 f"            float closing = -(p[0] * p[3] + p[1] * p[4] + p[2] * p[5]) / (d > 1e-6f ? d : 1e-6f);\n"
                 f"            d -= {_f(t)} * (closing > 0.0f ? closing : 0.0f);\n")
        sdf = s0 + lay.num_neighbors * nd  # the 3 x 3 SDF patch, x offset slowest; its centre at sdf + 4
        tc = actor.column_time
        column_clear = f"obs[{sdf + 4}]" if tc is None else "column_clear"
        column_ahead = ("" if tc is None else  # the surface distance column_time s ahead at the closing speed
                        f"        float gx = obs[{sdf + 7}] - obs[{sdf + 1}], gy = obs[{sdf + 5}] - obs[{sdf + 3}];\n"
                        f"        float gn = sqrtf(gx * gx + gy * gy);\n"
                        f"        float approach = -(obs[3] * gx + obs[4] * gy) / (gn > 1e-9f ? gn : 1e-9f);\n"
                        f"        column_clear = obs[{sdf + 4}] - {_f(tc)} * (approach > 0.0f ? approach : 0.0f);\n")
        if tc is not None:
            em.ram.append("static float column_clear;\n")
        em.body.append(
            f"    {{\n        float nearest = INFINITY;\n        for (i = 0; i < {lay.num_neighbors}; i++) {{\n"
            f"            const float *p = obs + {s0} + i * {nd};\n"
            f"            float d = sqrtf(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);\n{ahead}"
            f"            nearest = d < nearest ? d : nearest;\n        }}\n"
            f"        close_range = nearest < {_f(r)};\n{column_ahead}    }}\n    if (close_range) {{\n")
        em.ram.append("static int close_range;\n")
        start, branches = em.macs, []
        network("near.", actor.near.encoder, actor.near.mean)
        branches.append(em.macs - start)
        gate = f"nearest neighbour within {r:g} m" + ("" if t is None else f" or within it in {t:g} s")
        if actor.column is not None:
            em.body.append(f"    }} else if ({column_clear} < {_f(actor.column_range)}) {{\n")
            network("column.", actor.column.encoder, actor.column.mean)
            branches.append(em.macs - start - sum(branches))
            gate += f", else a column within {actor.column_range:g} m" + ("" if tc is None else f" or in {tc:g} s")
        em.body.append("    } else {\n")
        network("", enc, actor.mean)
        branches.append(em.macs - start - sum(branches))
        em.body.append("    }\n")
        em.macs = start + max(branches) + 4 * lay.num_neighbors
        kind = f"{kind} + close-range networks (gates: {gate})"
    else:
        network("", enc, actor.mean)
    missing = set(quantized.layers) - set(em.emitted)
    if missing:
        raise ValueError(f"layers {sorted(missing)} are not used by the exported forward pass")

    n_gold = int(golden_inputs.shape[0])
    gold_in = [_f(v) for v in golden_inputs.reshape(-1).tolist()]
    gold_out = [_f(v) for v in golden_outputs.reshape(-1).tolist()]
    header = fill_template(
        "policy.h.in", KIND=kind, METHOD=quantized.method, BITS=quantized.bits, MACS=em.macs,
        LAYOUT_DOC=_layout_doc(actor), OBS_DIM=obs_dim, ACT_DIM=ACT_DIM,
        NUM_NEIGHBORS=getattr(getattr(enc, "layout", None), "num_neighbors", 0), FALLBACK_ACTION=_f(fallback_action))
    ram = "".join(em.ram)
    init = "".join(em.init) or "    /* nothing to expand */\n"
    source = fill_template(
        "policy.c.in", KIND=kind, METHOD=quantized.method, BITS=quantized.bits,
        KERNELS=_used_kernels("".join(em.body) + init), WEIGHTS="".join(em.consts), RAM=ram, INIT=init,
        FORWARD="".join(em.body), OUT=out, GOLDEN_N=n_gold, GOLDEN_IN=_array("float", "golden_in", gold_in),
        GOLDEN_OUT=_array("float", "golden_out", gold_out), SELF_TEST_TOL=_f(self_test_tol))
    return {"policy.c": source, "policy.h": header}, {"macs": em.macs}
