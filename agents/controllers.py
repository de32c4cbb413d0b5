"""Classical controllers by name: the baselines a learned policy is judged against.

``make_controller("pid_avoid", cfg.dynamics)`` builds one; ``CONTROLLERS`` is the list every entry point
(``marl eval``, ``marl demo``, benchmarks) accepts wherever a policy is expected. Hand-written, not learned:
``pid`` is the cascaded position/attitude controller of agents.pid, ``pid_avoid`` the same with its
potential-field avoidance of columns and neighbours on, ``sbc`` the plain ``pid`` with its desired
acceleration filtered by safety barrier certificates (agents.sbc, the field's classical baseline);
``pid_plan`` is ``pid_avoid`` steered along shortest paths through the column map (agents.planner): it is
told the map, so it is a privileged teacher and reference point, and its users call its ``plan`` after
every reset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from agents.pid import PIDConfig, PIDController
from agents.planner import PlannedPIDController
from agents.sbc import SBCController

# name -> PIDConfig overrides
_CONTROLLERS: dict[str, dict[str, Any]] = {
    "pid": {},
    "pid_avoid": {"avoid": True},
    "sbc": {},
    "pid_plan": {"avoid": True},
}
_SBC = frozenset({"sbc"})  # names whose PID command goes through the barrier-certificate QP
CONTROLLERS: tuple[str, ...] = tuple(_CONTROLLERS)
# PIDConfig fields a caller may override: gains and limits, not the vehicle (that comes from the env) nor
# the switch that makes the controller what its name says.
_FIXED = frozenset({"mass", "arm", "inertia", "thrust_to_weight", "torque_to_thrust", "gravity", "control_dt",
                    "avoid"})
GAINS: tuple[str, ...] = tuple(f.name for f in fields(PIDConfig) if f.name not in _FIXED)


def check_gains(gains: Mapping[str, float]) -> None:
    """ValueError naming the first key of ``gains`` that is not a tunable PIDConfig field (``GAINS``)."""
    for key in gains:
        if key not in GAINS:
            raise ValueError(f"unknown controller gain {key!r}; allowed: {', '.join(GAINS)}")


def make_controller(name: str, dynamics: Any, device: str = "cpu",
                    gains: Mapping[str, float] | None = None) -> PIDController:
    """Controller ``name`` for the vehicle of ``dynamics`` (a DynamicsConfig-like object), with the PIDConfig
    defaults or, for the keys of ``gains`` (names in ``GAINS``), those values."""
    if name not in _CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; allowed: {', '.join(CONTROLLERS)}")
    check_gains(gains or {})
    cfg = PIDConfig.from_dynamics(dynamics, **{**_CONTROLLERS[name], **(gains or {})})
    if name in _SBC:
        return SBCController(cfg, device=device)
    if name == "pid_plan":
        return PlannedPIDController(cfg, device=device)
    return PIDController(cfg, device=device)
