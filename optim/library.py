"""Third-party optimisers by name: torch.optim and pytorch-optimizer, with the guards ``optim.registry`` adds.

The lower half of the registry: name resolution over the two libraries (torch names win over
pytorch-optimizer's same-named copies; ``torch:NAME`` and ``pytorch_optimizer:NAME`` reach either),
seed-list defaults, and the step guard of second-order optimisers. ``optim.registry`` puts SSO and
tpSGD on top; those two build their inner optimisers from here, which keeps the import graph acyclic
(registry -> sso / tpsgd -> library). Design note: docs/design/optim_registry.md.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "OptimizerNameError",
    "SecondOrderError",
    "available",
    "build",
    "is_second_order",
    "needs_closure",
    "resolve",
    "unknown_name_error",
]

# Plain names optim.registry gives to SSO and tpSGD: never resolved to a pytorch-optimizer class here.
RESERVED = ("sso", "tpsgd")

# torch.optim classes by plain name (SparseAdam left out: it only takes sparse gradients).
TORCH_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    name.lower(): getattr(torch.optim, name)
    for name in (
        "Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "ASGD",
        "Rprop", "LBFGS", "Adafactor", "Muon",
    )
    if hasattr(torch.optim, name)
}

# pytorch-optimizer names that are not plain registry names: they need an nn.Module instead of
# parameters (lomo, adalomo, adammini), torch.distributed (distributedmuon) or an extra package
# (demo needs einops), only update LoRA factor pairs (lorarite leaves a plain matrix unchanged), or fail
# in pytorch-optimizer 4.1.0 itself (bsam: step(closure) reads a state entry it never initialised).
# They stay reachable as ``pytorch_optimizer:NAME``.
PO_NOT_PLAIN = frozenset({"lomo", "adalomo", "adammini", "distributedmuon", "demo", "bsam", "lorarite"})

# pytorch-optimizer optimisers whose parameter groups must carry ``use_muon``; when plain tensors are
# passed, ``build`` splits them: matrices (ndim >= 2) get the Muon update, the rest AdamW.
PO_MUON_GROUPS = frozenset({"muon", "adamuon", "normuon", "muonclip", "adago"})

# Optimisers whose step() must be given a closure. lbfgs's re-evaluates the loss and calls backward;
# alig's only returns the loss value (call backward first: ``opt.step(lambda: float(loss))``).
CLOSURE_REQUIRED = frozenset({"lbfgs", "alig", "bsam"})

# Defaults from the seed list (../shared/reference/optimizers.md) where they differ from the library's.
SEED_DEFAULTS: dict[str, dict[str, Any]] = {
    "lion": {"lr": 1e-4, "betas": (0.9, 0.99)},
    "diffgrad": {"lr": 1e-3},
    "adamp": {"lr": 1e-3, "delta": 0.1, "wd_ratio": 0.1},
    "adahessian": {"lr": 0.15},
}

# Keywords a name cannot be built without; listed so that the error says which.
REQUIRED_KWARGS: dict[str, tuple[str, ...]] = {"ranger21": ("num_iterations",), "bsam": ("num_data",)}


class OptimizerNameError(ValueError):
    """An unknown optimiser name; the message lists the available ones, closest matches first."""


class SecondOrderError(RuntimeError):
    """A second-order optimiser was stepped without the graph of the gradients it differentiates."""


@functools.cache
def _po() -> dict[str, type[torch.optim.Optimizer]]:
    """pytorch-optimizer's classes by name (empty when the package is not installed)."""
    try:
        from pytorch_optimizer import get_supported_optimizers, load_optimizer  # optional: torch names work without it
    except ImportError:  # pragma: no cover - it is a dependency, but keep torch names usable without it
        return {}
    out: dict[str, type[torch.optim.Optimizer]] = {}
    for name in get_supported_optimizers():
        try:
            out[name] = load_optimizer(name)
        except (ImportError, NotImplementedError):  # pragma: no cover - optional integrations
            continue
    return out


def _norm(name: str) -> str:
    return name.strip().lower()


def _plain_po_names() -> list[str]:
    return [n for n in _po() if n not in TORCH_OPTIMIZERS and n not in RESERVED and n not in PO_NOT_PLAIN]


def available(qualified: bool = False) -> list[str]:
    """The optimiser names ``build`` accepts, sorted.

    With ``qualified=False`` (default) the plain names a config uses; with ``qualified=True`` also every
    ``torch:NAME`` and ``pytorch_optimizer:NAME`` (including ``pytorch_optimizer:sso``).
    """
    names = set(TORCH_OPTIMIZERS) | set(_plain_po_names())
    if qualified:
        names |= {f"torch:{n}" for n in TORCH_OPTIMIZERS}
        names |= {f"pytorch_optimizer:{n}" for n in _po()} | {"pytorch_optimizer:sso"}
    return sorted(names)


def unknown_name_error(name: str, extra: Iterable[str] = ()) -> OptimizerNameError:
    """The error for an unknown ``name``: closest matches first, then every available name (plus ``extra``)."""
    names = sorted({*available(), *extra})
    close = difflib.get_close_matches(_norm(name), sorted({*available(qualified=True), *extra}), n=5, cutoff=0.6)
    rest = [n for n in names if n not in close]
    hint = f"closest: {', '.join(close)}; " if close else ""
    return OptimizerNameError(
        f"unknown optimiser {name!r}; {hint}available: {', '.join(rest)} "
        "(also torch:NAME and pytorch_optimizer:NAME)"
    )


def resolve(name: str) -> tuple[str, type[Any]]:
    """Canonical name and class for ``name``; raises OptimizerNameError for an unknown one."""
    key = _norm(name)
    if key.startswith("torch:"):
        short = key.split(":", 1)[1]
        if short in TORCH_OPTIMIZERS:
            return key, TORCH_OPTIMIZERS[short]
        raise unknown_name_error(name)
    if key.startswith(("pytorch_optimizer:", "pytorch-optimizer:")):
        short = key.split(":", 1)[1]
        short = "spectralsphere" if short == "sso" else short
        if short in _po():
            return f"pytorch_optimizer:{short}", _po()[short]
        raise unknown_name_error(name)
    if key in TORCH_OPTIMIZERS:
        return key, TORCH_OPTIMIZERS[key]
    compact = key.replace("-", "").replace("_", "")
    for cand in (key, compact):
        if cand in _po() and cand not in PO_NOT_PLAIN:
            return cand, _po()[cand]
    raise unknown_name_error(name)


def _short(canonical: str) -> str:
    return canonical.split(":", 1)[-1]


@functools.cache
def _class_is_second_order(cls: type) -> bool:
    try:
        src = inspect.getsource(cls.step)
    except (OSError, TypeError):  # pragma: no cover - compiled or built-in
        return False
    return "compute_hutchinson_hessian" in src


def is_second_order(name: str) -> bool:
    """Whether the optimiser needs ``loss.backward(create_graph=True)`` before ``step()``.

    True for the Hutchinson-probe optimisers of pytorch-optimizer (``adahessian``, ``sophiah``): their
    step differentiates the gradients again. Raises OptimizerNameError for an unknown name.
    """
    _, cls = resolve(name)
    return _class_is_second_order(cls)


def needs_closure(name: str) -> bool:
    """Whether ``step()`` must be given a closure (lbfgs re-evaluates the loss; alig only reads its value)."""
    canonical, _ = resolve(name)
    return _short(canonical) in CLOSURE_REQUIRED


def _check_graph(opt: torch.optim.Optimizer, name: str) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.grad_fn is None:
                raise SecondOrderError(
                    f"optimiser {name!r} is second-order (Hutchinson Hessian probes): its step differentiates "
                    "the gradients again, but they carry no graph. Call loss.backward(create_graph=True) "
                    "before step() (see optim.is_second_order), or pass step(hessian=[...])."
                )


def _hessian_refresh_due(opt: torch.optim.Optimizer) -> bool:
    period = getattr(opt, "update_period", 1) or 1
    step = int(opt.param_groups[0].get("step", 0)) if opt.param_groups else 0
    return step % period == 0


def _guard_second_order(opt: torch.optim.Optimizer, name: str) -> None:
    """Make ``opt.step`` raise SecondOrderError instead of a cryptic autograd error or a wrong step."""

    # torch passes the bound call's positional arguments, ``self`` first: (self, closure, hessian).
    def pre_hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if kwargs.get("hessian") is not None or (len(args) > 2 and args[2] is not None):
            return None  # the caller supplies the Hessian estimate
        if not _hessian_refresh_due(optimizer):
            return None  # this step reuses the stored estimate: no second derivative taken
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            _check_graph(optimizer, name)
            return None

        def checked_closure() -> Any:
            loss = closure()
            _check_graph(optimizer, name)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": checked_closure}
        return (args[0], checked_closure, *args[2:]), kwargs

    opt.register_step_pre_hook(pre_hook)
    opt.second_order = True  # type: ignore[attr-defined]


def _muon_groups(params: Iterable[Any]) -> list[Any]:
    params = list(params)
    if not params or isinstance(params[0], dict):
        return params
    matrices = [p for p in params if p.ndim >= 2]
    others = [p for p in params if p.ndim < 2]
    groups: list[dict[str, Any]] = []
    if matrices:
        groups.append({"params": matrices, "use_muon": True})
    if others:
        groups.append({"params": others, "use_muon": False})
    return groups


def build(name: str, params: Iterable[Any] | torch.nn.Module, **kwargs: Any) -> Any:
    """Build the optimiser called ``name`` over ``params`` with settings ``kwargs``.

    ``params``: an iterable of tensors or parameter groups (a module's parameters are taken from it).

    Raises OptimizerNameError (a ValueError) listing the available names for an unknown one, and
    ValueError naming the rejected or missing setting. Second-order optimisers (``is_second_order``)
    come back guarded: stepping them after a backward without ``create_graph=True`` raises
    SecondOrderError.
    """
    canonical, cls = resolve(name)
    short = _short(canonical)
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    settings = {**SEED_DEFAULTS.get(short, {}), **kwargs} if canonical == short else dict(kwargs)
    missing = [k for k in REQUIRED_KWARGS.get(short, ()) if k not in settings]
    if missing and not canonical.startswith("torch:"):
        raise ValueError(f"optimiser {name!r} needs the setting(s) {', '.join(missing)}")
    if short in PO_MUON_GROUPS and cls not in TORCH_OPTIMIZERS.values():
        params = _muon_groups(params)
    try:
        opt = cls(params, **settings)
    except TypeError as err:
        raise ValueError(f"optimiser {name!r}: {err}") from None
    if _class_is_second_order(cls):
        _guard_second_order(opt, canonical)
    return opt
