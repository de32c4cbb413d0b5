"""Scenario table: where drones start, where their goals are, and how goals change over time.

The names follow quad-swarm-rl. Obstacle scenarios (``o_*``) have two layouts (``SwarmConfig.layout``):
``reference`` (the default: columns on random cells of the whole grid, starts and goals on free
cells, as quad-swarm-rl) and ``rows`` (a start row and a goal row kept free of columns).
Obstacle-free scenarios put the goals on a horizontal circle around a centre; events every
``goal_change_seconds`` move, swap or resize the goals.

Design note (each layout and event in detail): docs/design/simulator_core.md.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUTS = ("reference", "rows")  # obstacle layouts, see the module docstring


@dataclass(frozen=True)
class ScenarioSpec:
    """Static description of one scenario."""

    id: int
    obstacles: bool
    formation: float  # goal-circle radius in units of formation_size; 0 = one shared goal point
    event: str | None  # None, "move", "swap" or "resize"
    reach_threshold: float  # metres; "reached goal" when the windowed mean distance is below it
    hover: bool = False  # goals are the start positions
    row_goals: bool = False  # each drone its own goal slot in the goal row (o_random, o_swap_goals)


# name, obstacles, formation, event, reach threshold, hover, row goals
_TABLE = [
    ("hover", False, 0.0, None, 0.5, True, False),
    ("static_same_goal", False, 0.0, None, 1.0, False, False),
    ("static_diff_goal", False, 1.0, None, 0.5, False, False),
    ("dynamic_same_goal", False, 0.0, "move", 1.0, False, False),
    ("dynamic_diff_goal", False, 1.0, "move", 0.5, False, False),
    ("swap_goals", False, 1.0, "swap", 0.5, False, False),
    ("dynamic_formations", False, 1.0, "resize", 0.5, False, False),
    ("o_random", True, 0.0, None, 0.5, False, True),
    ("o_static_same_goal", True, 0.0, None, 1.0, False, False),
    ("o_swap_goals", True, 0.0, "swap", 0.5, False, True),
    ("o_dynamic_same_goal", True, 0.0, "move", 1.0, False, False),
]

SCENARIOS: dict[str, ScenarioSpec] = {row[0]: ScenarioSpec(i, *row[1:]) for i, row in enumerate(_TABLE)}
SCENARIO_NAMES: list[str] = [row[0] for row in _TABLE]
OBSTACLE_SCENARIOS = frozenset(name for name, spec in SCENARIOS.items() if spec.obstacles)
