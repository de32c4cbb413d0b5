"""The built-in PID controller (agents.pid) on the real simulator: hover, goal reaching, conventions."""

from __future__ import annotations

import math

import pytest
import torch

import quadspec
from agents import pid as pid_mod
from agents.pid import PIDConfig, PIDController
from envs import dynamics
from envs.config import make_config
from envs.swarm import QuadSwarmVecEnv


def _run_episode(env: QuadSwarmVecEnv, ctrl: PIDController, obs: torch.Tensor) -> dict[str, float]:
    """Step until the first episode ends; mean metrics over the envs."""
    while True:
        obs, _, _, _, info = env.step(ctrl(obs))
        if "episode" in info:
            return {k: float(v.float().mean()) for k, v in info["episode"].items()}


def test_motor_layout_and_vehicle_match_simulator():
    # agents/ may not import envs/: both read the motor layout and the vehicle from the contract module.
    assert pid_mod.PROP_SIGNS_XY is dynamics.PROP_SIGNS_XY is quadspec.PROP_SIGNS_XY
    assert pid_mod.PROP_CCW is dynamics.PROP_CCW is quadspec.PROP_CCW
    default, sim = PIDConfig(), make_config().dynamics
    for name in ("mass", "arm", "thrust_to_weight", "torque_to_thrust", "gravity", "control_dt", "max_thrust"):
        assert getattr(default, name) == pytest.approx(getattr(sim, name)), name
    assert tuple(default.inertia) == tuple(sim.inertia)


def test_from_dynamics_copies_vehicle_constants():
    dyn = make_config(dynamics={"mass": 0.03, "thrust_to_weight": 2.2}).dynamics
    cfg = PIDConfig.from_dynamics(dyn, kp_xy=5.0)
    assert cfg.mass == 0.03 and cfg.thrust_to_weight == 2.2 and cfg.kp_xy == 5.0
    assert cfg.control_dt == pytest.approx(dyn.control_dt)
    assert cfg.max_thrust == pytest.approx(dyn.max_thrust)


def test_actions_shape_and_range():
    ctrl = PIDController()
    obs = torch.randn(3, 5, 19 + 6 * 2 + 9) * 5.0  # far off and tumbling: the mixer must still clip
    for avoid in (False, True):
        ctrl.cfg.avoid = avoid
        act = ctrl(obs)
        assert act.shape == (3, 5, 4)
        assert torch.isfinite(act).all()
        assert act.min() >= -1.0 and act.max() <= 1.0
    with pytest.raises(ValueError):
        ctrl(torch.zeros(3, 5, 10))


def test_hover_at_goal_gives_hover_thrust():
    obs = torch.zeros(1, 1, 28)
    obs[..., 6:15] = torch.eye(3).flatten()  # level, at the goal, at rest
    act = PIDController()(obs)
    frac = 0.5 * (act + 1.0)
    assert torch.allclose(frac, torch.full_like(frac, 1.0 / 1.9), atol=1e-5)


def test_reset_zeroes_chosen_envs_only():
    ctrl = PIDController()
    obs = torch.zeros(3, 2, 28)
    obs[..., 6:15] = torch.eye(3).flatten()
    obs[..., 0] = 0.2  # inside the integration zone
    for _ in range(5):
        ctrl(obs)
    assert (ctrl.integral[..., 0] > 0).all()
    ctrl.reset([1])
    assert (ctrl.integral[1] == 0).all() and (ctrl.integral[0, :, 0] > 0).all() and (ctrl.integral[2, :, 0] > 0).all()
    ctrl.reset()
    assert (ctrl.integral == 0).all()


def test_hover_stays_within_10cm_with_thrust_noise():
    cfg = make_config(num_drones=4, scenario="hover", episode_seconds=10.0)
    assert cfg.dynamics.thrust_noise > 0
    env = QuadSwarmVecEnv(cfg, num_envs=4)
    ctrl = PIDController(PIDConfig.from_dynamics(cfg.dynamics))
    obs = env.reset(seed=0)
    worst = 0.0
    for _ in range(300):  # 3 s at 100 Hz
        obs, *_ = env.step(ctrl(obs))
        worst = max(worst, float(obs[..., :3].norm(dim=-1).max()))
    assert worst < 0.10, f"hover drifted {worst:.3f} m from the goal"


def test_static_diff_goal_success():
    cfg = make_config(num_drones=8, scenario="static_diff_goal", episode_seconds=5.0)
    env = QuadSwarmVecEnv(cfg, num_envs=4)
    ctrl = PIDController(PIDConfig.from_dynamics(cfg.dynamics))
    m = _run_episode(env, ctrl, env.reset(seed=1))
    assert m["reached_goal_rate"] >= 0.95
    assert m["success_rate"] >= 0.8
    assert m["floor_collision_rate"] == 0.0 and m["wall_collision_rate"] == 0.0


def test_recovers_attitude_and_yaw():
    # A closed-loop check of the roll/pitch/yaw sign conventions: wrong signs diverge at once.
    cfg = make_config(num_drones=2, num_neighbors=1, scenario="hover", episode_seconds=10.0)
    env = QuadSwarmVecEnv(cfg, num_envs=3)
    ctrl = PIDController(PIDConfig.from_dynamics(cfg.dynamics))
    env.reset(seed=0)
    snap = env.get_state([0, 1, 2])

    def rot(axis: int, a: float) -> torch.Tensor:
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    snap.rot[0] = rot(2, 1.0)  # yawed
    snap.rot[1] = rot(0, 0.6) @ rot(2, -2.5)  # rolled and yawed the other way
    snap.rot[2] = rot(1, 2.0)  # pitched past 90 degrees
    obs = env.set_state([0, 1, 2], snap)
    for _ in range(200):
        obs, *_ = env.step(ctrl(obs))
    r = obs[..., 6:15].reshape(3, 2, 3, 3)
    assert (r[..., 2, 2] > math.cos(math.radians(5))).all()  # upright
    assert (torch.atan2(r[..., 1, 0], r[..., 0, 0]).abs() < 0.05).all()  # yaw back to 0


def test_avoidance_option_clears_columns():
    cfg = make_config(num_drones=8, scenario="o_random", episode_seconds=8.0)
    env = QuadSwarmVecEnv(cfg, num_envs=2)
    ctrl = PIDController(PIDConfig.from_dynamics(cfg.dynamics, avoid=True))
    m = _run_episode(env, ctrl, env.reset(seed=0))
    assert m["obstacle_collision_rate"] == 0.0 and m["neighbour_collision_rate"] == 0.0
    assert m["floor_collision_rate"] == 0.0


def test_spec_checks_layout():
    cfg = make_config(num_drones=4, num_neighbors=3, scenario="o_random", episode_seconds=1.0)
    env = QuadSwarmVecEnv(cfg, num_envs=2)
    ctrl = PIDController(PIDConfig.from_dynamics(cfg.dynamics, avoid=True), spec=env.spec)
    assert ctrl(env.reset(seed=0)).shape == (2, 4, 4)
    with pytest.raises(ValueError):
        ctrl(torch.zeros(2, 4, 19 + 6 * 2 + 9))  # K = 2 observations for a K = 3 spec


def test_caution_slows_the_cruise_only_near_hazards():
    # 3 m from the goal, level, at rest; the SDF part says where the nearest column's surface is.
    obs = torch.zeros(2, 1, 28)
    obs[..., 0] = 3.0
    obs[..., 6:15] = torch.eye(3).flatten()
    obs[0, :, 19:] = 5.0  # open space
    obs[1, :, 19:] = PIDConfig().arm + 0.1  # at the safe clearance of a column: full proximity
    plain = PIDController(PIDConfig(avoid=True))
    careful = PIDController(PIDConfig(avoid=True, caution_pos_error=1.2))
    assert plain.position_error_clip(obs) == pytest.approx(1.6)
    clip = careful.position_error_clip(obs).flatten()
    assert clip.tolist() == pytest.approx([1.6, 1.2])
    # Half the ramp: halfway between the two clips.
    obs[1, :, 19:] = PIDConfig().arm + 0.8 - 0.7 / 6.0
    assert careful.position_error_clip(obs)[1].item() == pytest.approx(1.4, abs=1e-4)
    # Without avoidance the option does nothing; in the open the actions are the plain controller's.
    assert PIDController(PIDConfig(caution_pos_error=1.2)).position_error_clip(obs) == pytest.approx(1.6)
    torch.testing.assert_close(careful(obs[:1]), plain(obs[:1]))


def test_brake_room_floor_softens_braking_only_inside_the_safe_clearance():
    # A column on +x (its SDF falls by 0.1 m per grid step towards +x), the drone closing on it at 0.5 m/s.
    arm = PIDConfig().arm
    obs = torch.zeros(2, 1, 28)
    obs[..., 3] = 0.5
    obs[..., 6:15] = torch.eye(3).flatten()
    offsets = torch.tensor([-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # x offset of each SDF cell
    for row, clear in enumerate((0.05, 0.3)):  # inside / outside the 0.1 m safe clearance
        obs[row, :, 19:] = arm + clear - 0.1 * offsets
    v_des = torch.zeros(2, 1, 3)
    _, plain = PIDController(PIDConfig(avoid=True)).avoid_velocity(obs, v_des)
    _, floored = PIDController(PIDConfig(avoid=True, brake_room_floor=0.5)).avoid_velocity(obs, v_des)
    # Inside: the plain room (clearance - safe) is floored at 1 cm, so it brakes at max_brake (8 m/s^2); with
    # the floor the room is half the 5 cm clearance: 0.5^2 / (2 x 0.025) = 5 m/s^2, away from the column.
    assert plain[0, 0].tolist() == pytest.approx([-8.0, 0.0, 0.0], abs=1e-4)
    assert floored[0, 0].tolist() == pytest.approx([-5.0, 0.0, 0.0], abs=1e-4)
    # Outside, clearance - safe (0.2 m) is more than half the clearance: the floor changes nothing.
    torch.testing.assert_close(floored[1], plain[1])


def test_brake_room_floor_threads_the_gaps_between_large_columns():
    # 0.8 m columns stand 0.2 m apart: the plain controller chatters in the gaps and times out.
    cfg = make_config(num_drones=8, scenario="o_random", density=0.6, obstacle_size=0.8)
    # The gap-threading gains of configs/swarm_dense_gaps.yaml's teacher (without its slower cruise).
    gains = dict(brake_room_floor=0.5, max_brake=12.0, push_gain=4.0)
    runs = {}
    for name, extra in (("plain", {}), ("floored", gains)):
        env = QuadSwarmVecEnv(cfg, num_envs=16)
        ctrl = PIDController(PIDConfig.from_dynamics(cfg.dynamics, avoid=True, **extra))
        runs[name] = _run_episode(env, ctrl, env.reset(seed=0))
    assert runs["floored"]["deadlock_rate"] < 0.5 * runs["plain"]["deadlock_rate"]
    assert runs["floored"]["success_rate"] > runs["plain"]["success_rate"] + 0.04
