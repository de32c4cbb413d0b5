"""Optimisers by name for the trainer. One entry point, ``make_optimizer``: adam, adamw, sgd and rmsprop
are built here from torch.optim (with its fast CPU kernels); every other name is delegated to the
registry of ``optim/`` (``optim.build``: torch.optim and pytorch-optimizer names), as long as its
``step()`` fits PPO's plain ``backward(); step()`` loop."""

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
FUSED = ("adam", "adamw")  # torch has fused CPU kernels for these; the others get the foreach path


# ``optim.name: sso`` replaces PPO's clipped policy step by SSO's functional mirror ascent (see
# marl.ppo); it is not a torch optimiser and is handled by the trainer, not built here.
POLICY_UPDATES = ("sso",)


def check_optimizer_name(name: str) -> None:
    """Raise ValueError unless ``name`` can drive the PPO update: known, and not in need of a closure or
    of layer-wise targets. Second-order names (sophiah, adahessian) are fine: the update then calls
    ``backward(create_graph=True)``."""
    if name.lower() in OPTIMIZERS or name.lower() in POLICY_UPDATES:
        return
    import optim  # the registry: imported only for names beyond the four above

    canonical, _ = optim.resolve(name)  # OptimizerNameError (a ValueError) lists the available names
    if canonical in optim.registry.OURS or optim.needs_closure(name):
        raise ValueError(
            f"optimiser {name!r} needs its own training step (a closure or layer-wise targets), which the PPO "
            "loop does not provide; use a first-order or second-order optimiser (adam, lion, sophiah) or sso"
        )


def is_second_order(name: str) -> bool:
    """Whether ``name`` needs ``backward(create_graph=True)`` (False for the torch four and sso)."""
    if name.lower() in OPTIMIZERS or name.lower() in POLICY_UPDATES:
        return False
    import optim

    return optim.is_second_order(name)


def make_optimizer(name: str, params: Iterable[Any], **kw: Any) -> torch.optim.Optimizer:
    """Build the optimiser called ``name`` over ``params`` with settings ``kw``.

    Raises ValueError naming the allowed names for an unknown one, or the rejected setting.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        check_optimizer_name(name)
        import optim

        return optim.build(name, params, **kw)
    # The per-parameter loop of the default implementation dominated small-minibatch steps on a CPU
    # (Adam: 1.4 ms per step vs 0.3 ms fused, for a 55-tensor policy; forward+backward took 6 ms).
    if key in FUSED:
        kw.setdefault("fused", True)
    else:
        kw.setdefault("foreach", True)
    try:
        return OPTIMIZERS[key](params, **kw)
    except TypeError as err:
        raise ValueError(f"optimiser {name!r}: {err}") from None
