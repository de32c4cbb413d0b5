"""Scenario table: where drones start, where their goals are, and how goals change over time.

The names follow quad-swarm-rl. Obstacle scenarios (``o_*``) have two layouts (``SwarmConfig.layout``):

* ``reference`` (the default), as quad-swarm-rl does it: columns on ``int(density * cells)`` random
  cells of the whole 8 x 8 m grid (density 0.2: 12 columns), starts and goals drawn from the free
  cells (``generate_pos_obst_map`` in its ``o_random``), so a drone may have to cross the field in
  any direction. Unlike the reference, the drones of one env take distinct (cell, height) slots
  (the reference draws cells with replacement and may spawn two drones in one place), jittered by
  ``spawn_jitter``; goal slots are distinct too. Shared goal centres (``o_static_same_goal``,
  ``move``) are a random free cell centre.
* ``rows`` (this project's earlier layout): the grid's first row (y < 0 edge) is the start row and its
  last row the goal row; both stay free of columns, the columns fill the rows between. Starts and
  goals are distinct slots of those rows; shared goal centres are a goal-row cell centre.
* Obstacle-free scenarios: starts are distinct slots over the whole grid; goals form a horizontal
  circle of radius ``formation_size * formation`` around a centre drawn in the middle of the room.
* Events every ``goal_change_seconds``: ``move`` draws a new goal centre (a free cell centre in
  obstacle maps), ``swap`` reverses the goal assignment across the swarm, ``resize`` draws a new
  formation radius in [0.5, 2] x ``formation_size``.
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
