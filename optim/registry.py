"""Optimisers by name: one registry over torch.optim, pytorch-optimizer and our own SSO and tpSGD.

    import optim
    opt = optim.build("lion", model.parameters(), lr=1e-4)
    optim.available()               # the plain names a config may use
    optim.is_second_order("sophiah")  # True: call loss.backward(create_graph=True) before step()

Only the name resolution and two guards are written here (a second-order optimiser stepped after a
plain ``backward()`` raises an error that names the fix); every update rule comes from torch.optim or
pytorch-optimizer, SSO and tpSGD from ``optim.sso`` and ``optim.tpsgd``.

Design note (name resolution order, defaults): docs/design/optim_registry.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from optim import library
from optim.library import OptimizerNameError, SecondOrderError
from optim.sso import SSO
from optim.tpsgd import TPSGD

__all__ = [
    "OptimizerNameError",
    "SecondOrderError",
    "available",
    "build",
    "builder",
    "is_second_order",
    "needs_closure",
    "resolve",
]

# Ours, by plain name: no package ships them. They sit on top of optim.library (their inner optimisers
# are built there), so the registry imports them and they never import the registry.
OURS: dict[str, type[torch.optim.Optimizer]] = {"sso": SSO, "tpsgd": TPSGD}


def available(qualified: bool = False) -> list[str]:
    """The optimiser names ``build`` accepts, sorted.

    With ``qualified=False`` (default) the plain names a config uses; with ``qualified=True`` also every
    ``torch:NAME`` and ``pytorch_optimizer:NAME`` (including ``pytorch_optimizer:sso``).
    """
    return sorted({*OURS, *library.available(qualified)})


def resolve(name: str) -> tuple[str, type[Any]]:
    """Canonical name and class for ``name``; raises OptimizerNameError for an unknown one."""
    key = name.strip().lower()
    if key in OURS:
        return key, OURS[key]
    try:
        return library.resolve(name)
    except OptimizerNameError:
        raise library.unknown_name_error(name, OURS) from None


def is_second_order(name: str) -> bool:
    """Whether the optimiser needs ``loss.backward(create_graph=True)`` before ``step()``.

    True for the Hutchinson-probe optimisers of pytorch-optimizer (``adahessian``, ``sophiah``): their
    step differentiates the gradients again. Raises OptimizerNameError for an unknown name.
    """
    canonical, _ = resolve(name)
    return canonical not in OURS and library.is_second_order(canonical)


def needs_closure(name: str) -> bool:
    """Whether ``step()`` must be given a closure (lbfgs re-evaluates the loss; alig only reads its value)."""
    canonical, _ = resolve(name)
    return canonical not in OURS and library.needs_closure(canonical)


def build(name: str, params: Iterable[Any] | torch.nn.Module, **kwargs: Any) -> Any:
    """Build the optimiser called ``name`` over ``params`` with settings ``kwargs``.

    ``params`` is what the optimiser class takes: an iterable of tensors or parameter groups for every
    name except ``tpsgd``, which takes the ``nn.Module`` it trains layer by layer. ``sso`` needs
    ``model_fn`` and ``loss_fn`` keywords (see ``optim.sso.SSO``).

    Raises OptimizerNameError (a ValueError) listing the available names for an unknown one, and
    ValueError naming the rejected or missing setting. Second-order optimisers (``is_second_order``)
    come back guarded: stepping them after a backward without ``create_graph=True`` raises
    SecondOrderError.
    """
    canonical, cls = resolve(name)
    if canonical in OURS:
        return cls(params, **kwargs)
    return library.build(name, params, **kwargs)


def builder(name: str, **kwargs: Any) -> Callable[[Iterable[Any]], Any]:
    """A one-argument factory ``params -> optimiser`` (validated now), for code that builds later."""
    resolve(name)
    return lambda params: build(name, params, **kwargs)
