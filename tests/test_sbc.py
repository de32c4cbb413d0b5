"""The safety-barrier-certificate controller: its batched QP, its barrier rows and its closed loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.controllers import CONTROLLERS, make_controller
from agents.pid import PIDConfig, PIDController
from agents.sbc import SBCController, solve_qp
from envs.config import make_config
from envs.swarm import QuadSwarmVecEnv

LO = torch.tensor([-5.0, -5.0, -5.0])
HI = torch.tensor([5.0, 5.0, 6.0])


# ------------------------------------------------------------------------------------------- the QP


def test_qp_single_and_corner_constraints_have_the_analytic_answer():
    a_des = torch.tensor([[2.0, 0.0, 1.0], [2.0, 2.0, 0.0], [0.2, 0.1, 0.0], [9.0, -9.0, 9.0]])
    g = torch.tensor([
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # a_x <= 1
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # a_x <= 0.5, a_y <= 0.5
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # already feasible
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # box only
    ])
    h = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.5, 0.5], [1.0, 1.0]])
    a = solve_qp(a_des, g, h, LO, HI, iterations=50)
    want = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.2, 0.1, 0.0], [5.0, -5.0, 6.0]])
    assert torch.allclose(a, want, atol=1e-5)


def test_qp_matches_a_reference_solver_on_random_feasible_problems():
    optimize = pytest.importorskip("scipy.optimize")
    gen = torch.Generator().manual_seed(0)
    n, c = 64, 3
    a_des = torch.randn(n, 3, generator=gen) * 4
    g = torch.randn(n, c, 3, generator=gen)
    feasible_point = torch.randn(n, 3, generator=gen).clamp(-3, 3)  # every problem has an interior point
    h = (g * feasible_point.unsqueeze(1)).sum(-1) + torch.rand(n, c, generator=gen)
    a = solve_qp(a_des, g, h, LO, HI, iterations=500, tol=1e-9)
    assert torch.all((g * a.unsqueeze(1)).sum(-1) <= h + 1e-4), "barrier row violated"
    assert torch.all((a >= LO - 1e-6) & (a <= HI + 1e-6)), "acceleration bound violated"
    worst = 0.0
    for i in range(n):
        gi, hi_, di = g[i].double().numpy(), h[i].double().numpy(), a_des[i].double().numpy()
        ref = optimize.minimize(
            lambda x, di=di: float(((x - di) ** 2).sum()), np.zeros(3), jac=lambda x, di=di: 2 * (x - di),
            constraints=[{"type": "ineq", "fun": lambda x, gi=gi, hi_=hi_: hi_ - gi @ x, "jac": lambda x, gi=gi: -gi}],
            bounds=list(zip(LO.tolist(), HI.tolist(), strict=True)), method="SLSQP", options={"ftol": 1e-12},
        )
        worst = max(worst, float(np.abs(ref.x - a[i].double().numpy()).max()))
    assert worst < 1e-3, f"largest difference to SLSQP: {worst}"


# ------------------------------------------------------------------------------------- barrier rows


def _obs(num_neighbors: int, rel: list[list[float]], rel_vel: list[list[float]], vel: list[float], sdf=None):
    """One drone's observation [1, 1, D] at its goal with the given neighbours and SDF."""
    obs = torch.zeros(1, 1, 19 + 6 * num_neighbors + 9)
    obs[0, 0, 3:6] = torch.tensor(vel)
    obs[0, 0, 6:15] = torch.eye(3).flatten()
    obs[0, 0, 18] = 2.0
    for j in range(num_neighbors):
        obs[0, 0, 19 + 6 * j : 22 + 6 * j] = torch.tensor(rel[j])
        obs[0, 0, 22 + 6 * j : 25 + 6 * j] = torch.tensor(rel_vel[j])
    obs[0, 0, -9:] = 10.0 if sdf is None else sdf
    return obs


def test_closing_neighbour_forces_braking_and_the_filtered_command_meets_every_row():
    ctrl = SBCController(PIDConfig())
    # A neighbour 0.5 m ahead in +x, closing at 2 m/s (we fly at +1 m/s, it comes at -1 m/s).
    obs = _obs(1, [[0.5, 0.0, 0.0]], [[-2.0, 0.0, 0.0]], [1.0, 0.0, 0.0])
    g, h = ctrl.constraints(obs)
    assert g.shape == (1, 1, 4, 3) and h.shape == (1, 1, 4)  # neighbour, nearest column, unseen columns, floor
    a_des = torch.tensor([[[3.0, 0.0, 0.0]]])  # pushing on towards it
    a = ctrl.filter(obs, a_des)
    assert float(a[0, 0, 0]) < -1.0, f"no braking: {a.tolist()}"
    assert torch.all((g * a.unsqueeze(2)).sum(-1) <= h + 1e-4)
    # Far apart and separating: the command passes unchanged.
    far = _obs(1, [[3.0, 0.0, 0.0]], [[1.0, 0.0, 0.0]], [0.0, 0.0, 0.0])
    assert torch.allclose(ctrl.filter(far, a_des), a_des)


def test_column_ahead_forces_braking_and_a_flat_sdf_adds_no_row():
    ctrl = SBCController(PIDConfig())
    res = 0.1
    # A column surface 0.3 m ahead in +x: SDF(p + (i h, j h)) = 0.3 - i h, x offset i varying slowest.
    sdf = torch.tensor([0.3 - i * res for i in (-1, 0, 1) for _ in (-1, 0, 1)])
    obs = _obs(0, [], [], [1.5, 0.0, 0.0], sdf)
    a = ctrl.filter(obs, torch.tensor([[[3.0, 1.0, 0.0]]]))
    assert float(a[0, 0, 0]) < 0.0, "flying at the column without braking"
    assert float(a[0, 0, 1]) == pytest.approx(1.0, abs=1e-4), "the tangential part should pass"
    flat = _obs(0, [], [], [1.5, 0.0, 0.0])
    a_des = torch.tensor([[[3.0, 1.0, -2.0]]])
    assert torch.allclose(ctrl.filter(flat, a_des), a_des)


def test_speed_near_columns_is_capped_whatever_the_direction():
    """A column beside the drone (+y, 0.3 m of clearance) while it flies along x at 1.2 m/s: the
    nearest column's row is inactive (no closing speed), but unseen columns could lie ahead, so the
    speed barrier makes it brake; the same flight far from any column (flat SDF) is left alone."""
    ctrl = SBCController(PIDConfig())
    res = 0.1
    sdf = torch.tensor([0.3 - j * res for _ in (-1, 0, 1) for j in (-1, 0, 1)])
    obs = _obs(0, [], [], [1.2, 0.0, 0.0], sdf)
    a_des = torch.tensor([[[3.0, 0.0, 0.0]]])
    g, h = ctrl.constraints(obs)
    assert g.shape == (1, 1, 3, 3)
    a = ctrl.filter(obs, a_des)
    assert float(a[0, 0, 0]) < 0.0, f"no braking near columns at 1.2 m/s: {a.tolist()}"
    assert torch.all((g * a.unsqueeze(2)).sum(-1) <= h + 1e-4)
    assert torch.allclose(ctrl.filter(_obs(0, [], [], [1.2, 0.0, 0.0]), a_des), a_des)


def test_fast_descent_near_the_floor_is_braked():
    ctrl = SBCController(PIDConfig())
    obs = _obs(0, [], [], [0.0, 0.0, -1.5])
    obs[0, 0, 18] = 0.6  # 0.6 m above the floor, falling at 1.5 m/s
    a = ctrl.filter(obs, torch.tensor([[[0.0, 0.0, -3.0]]]))
    assert float(a[0, 0, 2]) > 0.0, f"no braking above the floor: {a.tolist()}"
    high = _obs(0, [], [], [0.0, 0.0, -0.5])  # 2 m up, slow: left alone
    assert torch.allclose(ctrl.filter(high, torch.tensor([[[0.0, 0.0, -3.0]]])), torch.tensor([[[0.0, 0.0, -3.0]]]))


# ----------------------------------------------------------------------------------------- closed loop


def _fly(ctrl, env, steps):
    obs = env._obs
    nbr = obs_col = False
    for _ in range(steps):
        obs, *_ = env.step(ctrl(obs))
        s = env.get_state([0])
        nbr |= bool(s.prev_nbr_col.any())
        obs_col |= bool(s.prev_obs_col.any())
    return nbr, obs_col, env.get_state([0])


def _head_on():
    cfg = make_config(num_drones=2, num_neighbors=1, scenario="static_diff_goal", dynamics={"thrust_noise": 0.0})
    env = QuadSwarmVecEnv(cfg, num_envs=1)
    env.reset(seed=0)
    s = env.get_state([0])
    s.pos[0] = torch.tensor([[-1.5, 0.0, 2.0], [1.5, 0.0, 2.0]])
    s.goals[0] = torch.tensor([[1.5, 0.0, 2.0], [-1.5, 0.0, 2.0]])  # swap places through each other
    s.vel[0] = 0.0
    env.set_state([0], s)
    return env


def test_head_on_pair_collides_under_pid_and_not_under_sbc():
    env = _head_on()
    nbr, _, _ = _fly(make_controller("pid", env.cfg.dynamics), env, 300)
    assert nbr, "the plain PID should fly the two drones into each other"
    env = _head_on()
    nbr, _, s = _fly(make_controller("sbc", env.cfg.dynamics), env, 300)
    assert not nbr, "SBC let the pair collide"


def _at_column():
    cfg = make_config(num_drones=1, num_neighbors=0, scenario="o_random", density=0.2,
                      dynamics={"thrust_noise": 0.0})
    env = QuadSwarmVecEnv(cfg, num_envs=1)
    env.reset(seed=0)
    s = env.get_state([0])
    cx, cy = s.obstacles[0, 0].tolist()
    s.obstacles[0, 1:] = 1.0e3  # one column only, so the straight line crosses nothing else
    s.pos[0, 0] = torch.tensor([cx - 1.5, cy + 0.05, 2.0])
    s.goals[0, 0] = torch.tensor([cx + 1.5, cy + 0.05, 2.0])  # straight through the column
    s.vel[0] = 0.0
    env.set_state([0], s)
    return env


def test_column_in_the_way_is_hit_by_pid_and_not_by_sbc():
    nbr, col, _ = _fly(make_controller("pid", make_config().dynamics), _at_column(), 300)
    assert col, "the plain PID should fly into the column"
    nbr, col, _ = _fly(make_controller("sbc", make_config().dynamics), _at_column(), 300)
    assert not col, "SBC flew into the column"


def test_registry_builds_sbc_and_rejects_avoid():
    assert "sbc" in CONTROLLERS
    ctrl = make_controller("sbc", make_config().dynamics)
    assert isinstance(ctrl, SBCController) and isinstance(ctrl, PIDController) and not ctrl.cfg.avoid
    with pytest.raises(ValueError, match="avoid"):
        SBCController(PIDConfig(avoid=True))


def test_a_row_the_box_cannot_meet_gets_the_most_the_box_allows_and_leaves_z_alone():
    # a_x >= 8 is out of reach of |a_x| <= 5: the answer brakes as hard as allowed along x, keeps y and z
    a_des = torch.tensor([[1.0, 0.5, -0.3]])
    g = torch.tensor([[[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]])
    h = torch.tensor([[-8.0, 1.0]])
    a = solve_qp(a_des, g, h, LO, HI, iterations=50)
    assert torch.allclose(a, torch.tensor([[5.0, 0.5, -0.3]]), atol=1e-4)
