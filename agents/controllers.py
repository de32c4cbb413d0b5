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


def make_controller(name: str, dynamics: Any, device: str = "cpu") -> PIDController:
    """Controller ``name`` for the vehicle of ``dynamics`` (a DynamicsConfig-like object)."""
    if name not in _CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; allowed: {', '.join(CONTROLLERS)}")
    cfg = PIDConfig.from_dynamics(dynamics, **_CONTROLLERS[name])
    if name in _SBC:
        return SBCController(cfg, device=device)
    if name == "pid_plan":
        return PlannedPIDController(cfg, device=device)
    return PIDController(cfg, device=device)
