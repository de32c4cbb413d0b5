"""Optimisers for the platform: a registry by name over torch.optim and pytorch-optimizer, plus SSO
(target-based surrogate optimisation), tpSGD (target-projection SGD) and learning-rate schedules.

Generic over torch modules; imports none of envs, agents, marl or deploy.

    import optim
    opt = optim.build("adam", model.parameters(), lr=3e-4)
    optim.available(), optim.is_second_order("sophiah")
"""

from optim.memory import SavedTensorMeter
from optim.registry import (
    OptimizerNameError,
    SecondOrderError,
    available,
    build,
    builder,
    is_second_order,
    needs_closure,
    resolve,
)
from optim.schedules import linear_decay, refined, refined_multipliers, warmup_poly
from optim.sso import SSO, ArmijoConfig, FMAStats, SSOStats, default_eta, fma_policy_update, sso_step
from optim.tpsgd import TPSGD, sequential_forward

__all__ = [
    "SSO",
    "TPSGD",
    "ArmijoConfig",
    "FMAStats",
    "OptimizerNameError",
    "SSOStats",
    "SavedTensorMeter",
    "SecondOrderError",
    "available",
    "build",
    "builder",
    "default_eta",
    "fma_policy_update",
    "is_second_order",
    "linear_decay",
    "needs_closure",
    "refined",
    "refined_multipliers",
    "resolve",
    "sequential_forward",
    "sso_step",
    "warmup_poly",
]
