"""Optimisers by name. One entry point, ``make_optimizer``, so that the registry of ``optim/`` can take
over later (SSO, tpSGD, schedules) without the trainer changing: it only ever calls this function."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# name -> torch.optim class; lower-case names are what configs use.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def make_optimizer(name: str, params: Iterable[Any], **kw: Any) -> torch.optim.Optimizer:
    """Build the optimiser called ``name`` (adam, adamw, sgd, rmsprop) over ``params`` with settings ``kw``.

    Raises ValueError naming the allowed names for an unknown one, or the rejected setting.
    """
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown optimiser {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    try:
        return cls(params, **kw)
    except TypeError as err:
        raise ValueError(f"optimiser {name!r}: {err}") from None
