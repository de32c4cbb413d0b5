"""Physics of the batched quadrotor model, checked through the vector env's public API.

States are read and written with ``get_state`` / ``set_state`` (env axis first), so these tests do not
depend on the simulator's internal tensor layout. Conventions under test (envs/dynamics.py):
x forward, y left, z up; motors 0..3 = front-right, back-right, back-left, front-left; motors 1 and 3
spin counter-clockwise seen from above (their drag torque on the body is clockwise, -z).
"""

import math

import numpy as np
import pytest
import torch

from envs.config import make_config
from envs.swarm import QuadSwarmVecEnv

# Motor layout written out independently of envs/dynamics.py.
MOTOR_XY_SIGNS = np.array([(1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)])
MOTOR_CCW = np.array([-1.0, 1.0, -1.0, 1.0])


def make_env(num_envs=1, num_drones=2, scenario="hover", dynamics=None, seed=0, **kwargs):
    """A noise-free env (unless ``dynamics`` turns thrust noise on), reset with ``seed``."""
    dyn = {"thrust_noise": 0.0, **(dynamics or {})}
    kwargs.setdefault("num_neighbors", min(1, num_drones - 1))
    cfg = make_config(num_drones=num_drones, scenario=scenario, dynamics=dyn, **kwargs)
    env = QuadSwarmVecEnv(cfg, num_envs=num_envs)
    env.reset(seed=seed)
    return env


def all_ids(env):
    return list(range(env.num_envs))


def snapshot(env):
    return env.get_state(all_ids(env))


def restore(env, snap):
    return env.set_state(all_ids(env), snap)


def hover_action(env):
    """The command whose thrust equals the weight: fraction 1 / thrust_to_weight on every motor."""
    tw = env.cfg.dynamics.thrust_to_weight
    return torch.full((env.num_envs, env.num_drones, 4), 2.0 / tw - 1.0)


def const_action(env, value):
    return torch.full((env.num_envs, env.num_drones, 4), float(value))


# ---------------------------------------------------------------------------------------------- hover


@pytest.mark.parametrize("thrust_to_weight, mass", [(1.9, 0.028), (2.25, 0.027)])
def test_hover_thrust_holds_position_for_one_second(thrust_to_weight, mass):
    env = make_env(num_envs=2, num_drones=3, dynamics={"thrust_to_weight": thrust_to_weight, "mass": mass})
    start = snapshot(env)
    assert torch.all(start.vel == 0) and torch.all(start.omega == 0)
    act = hover_action(env)
    steps = int(round(1.0 / env.cfg.dynamics.control_dt))
    max_drift = 0.0
    for _ in range(steps):
        obs, rew, *_ = env.step(act)
        s = snapshot(env)
        max_drift = max(max_drift, float((s.pos - start.pos).norm(dim=-1).max()))
    assert max_drift < 0.01, f"hover drifted {max_drift:.4f} m in 1 s"
    assert float(s.vel.abs().max()) < 1e-3
    assert float(s.omega.abs().max()) < 1e-3
    # Hovering at the goal: obs p - g stays ~0 and the reward is the small upright bonus.
    assert float(obs[..., 0:3].abs().max()) < 0.01
    assert torch.isfinite(rew).all()


def test_slightly_more_thrust_climbs_and_less_sinks():
    env = make_env(num_envs=1, num_drones=2)
    z0 = snapshot(env).pos[..., 2].clone()
    act = hover_action(env)
    act[:, 0] += 0.02  # drone 0 above hover thrust
    act[:, 1] -= 0.02  # drone 1 below
    for _ in range(30):
        env.step(act)
    dz = snapshot(env).pos[..., 2] - z0
    assert float(dz[0, 0]) > 0.005 and float(dz[0, 1]) < -0.005


# ---------------------------------------------------------------------------------- free fall, thrust


def test_free_fall_follows_gravity():
    env = make_env(num_envs=2, num_drones=2)
    snap = snapshot(env)
    snap.motor.zero_()  # no residual (lagged) hover thrust
    snap.pos[..., 2] = 3.0
    restore(env, snap)
    x0 = snap.pos.clone()
    g, cdt = env.cfg.dynamics.gravity, env.cfg.dynamics.control_dt
    act = const_action(env, -1.0)
    for k in range(1, int(round(0.5 / cdt)) + 1):
        env.step(act)
        s = snapshot(env)
        t = k * cdt
        z_expected = 3.0 - 0.5 * g * t * t
        err = float((s.pos[..., 2] - z_expected).abs().max())
        assert err < 0.015, f"t={t:.2f}s: z off by {err:.4f} m from z0 - g t^2 / 2"
        assert torch.allclose(s.vel[..., 2], torch.full_like(s.vel[..., 2], -g * t), atol=1e-3)
        assert torch.allclose(s.pos[..., :2], x0[..., :2], atol=1e-6), "free fall moved horizontally"
        assert float(s.omega.abs().max()) == 0.0
    assert float(s.pos[..., 2].max()) < 3.0 - 1.2  # fell ~1.23 m


def test_full_thrust_accelerates_at_thrust_to_weight_minus_one_g():
    env = make_env(num_envs=1, num_drones=2, dynamics={"thrust_to_weight": 2.0})
    snap = snapshot(env)
    snap.motor.fill_(1.0)  # motors already at full speed
    restore(env, snap)
    g, cdt = env.cfg.dynamics.gravity, env.cfg.dynamics.control_dt
    for _ in range(10):
        env.step(const_action(env, 1.0))
    vz = snapshot(env).vel[..., 2]
    assert torch.allclose(vz, torch.full_like(vz, (2.0 - 1.0) * g * 10 * cdt), rtol=1e-3)


def test_motor_first_order_lag_on_sqrt_thrust():
    t_up, t_down = 0.1, 0.2
    env = make_env(
        num_envs=1, num_drones=1, num_neighbors=0, dynamics={"motor_time_up": t_up, "motor_time_down": t_down}
    )
    dt, sims = env.cfg.dynamics.dt, env.cfg.dynamics.sim_steps
    m0 = math.sqrt(1.0 / env.cfg.dynamics.thrust_to_weight)
    assert torch.allclose(snapshot(env).motor, torch.full((1, 1, 4), m0), atol=1e-6), "motors start at hover"
    for _ in range(3):
        env.step(const_action(env, -1.0))  # spin down towards 0
    down = m0 * (1.0 - 4.0 * dt / t_down) ** (3 * sims)
    assert torch.allclose(snapshot(env).motor, torch.full((1, 1, 4), down), atol=1e-5)
    snap = snapshot(env)
    snap.motor.zero_()
    restore(env, snap)
    for _ in range(3):
        env.step(const_action(env, 1.0))  # spin up towards 1
    up = 1.0 - (1.0 - 4.0 * dt / t_up) ** (3 * sims)
    assert torch.allclose(snapshot(env).motor, torch.full((1, 1, 4), up), atol=1e-5)


# -------------------------------------------------------------------------------------------- torques


def expected_rates_after_one_control_step(cfg, actions):
    """Body rates (float64 numpy) after one control step from rest at hover, for actions [4]."""
    dyn = cfg.dynamics
    tw, dt = dyn.thrust_to_weight, dyn.dt
    max_thrust = tw * dyn.mass * dyn.gravity / 4.0
    alpha = 4.0 * dt / dyn.motor_time_up
    assert dyn.motor_time_up == dyn.motor_time_down
    target = np.sqrt(0.5 * (np.asarray(actions, dtype=np.float64) + 1.0))
    motor = np.full(4, math.sqrt(1.0 / tw))
    half = dyn.arm / math.sqrt(2.0)
    inertia = np.asarray(dyn.inertia)
    omega = np.zeros(3)
    for _ in range(dyn.sim_steps):
        motor = motor + alpha * (target - motor)
        force = motor**2 * max_thrust
        torque = np.array(
            [
                (half * MOTOR_XY_SIGNS[:, 1] * force).sum(),
                -(half * MOTOR_XY_SIGNS[:, 0] * force).sum(),
                -(dyn.torque_to_thrust * MOTOR_CCW * force).sum(),
            ]
        )
        omega = omega + dt * (torque - np.cross(omega, inertia * omega)) / inertia
    return omega


@pytest.mark.parametrize(
    "up_motors, axis, sign",
    [
        ((2, 3), 0, +1),  # more thrust on the left (+y) pair: roll rate omega_x > 0 (right side down)
        ((0, 3), 1, -1),  # more thrust on the front (+x) pair: torque_y = -sum x F < 0, nose up
        ((1, 3), 2, -1),  # more thrust on the CCW pair: drag torque clockwise, yaw rate omega_z < 0
    ],
    ids=["roll", "pitch", "yaw"],
)
def test_motor_differential_rotates_the_right_way(up_motors, axis, sign):
    env = make_env(num_envs=1, num_drones=1, num_neighbors=0)
    act = hover_action(env)
    delta = torch.full((4,), -0.05)
    delta[list(up_motors)] = 0.05
    act[0, 0] += delta
    env.step(act)
    omega = snapshot(env).omega[0, 0].double()
    assert sign * float(omega[axis]) > 0, f"omega={omega.tolist()}: axis {axis} should have sign {sign}"
    others = [i for i in range(3) if i != axis]
    assert float(omega[others].abs().max()) < 1e-3 * abs(float(omega[axis])), f"cross-coupling: {omega.tolist()}"
    expected = expected_rates_after_one_control_step(env.cfg, act[0, 0].numpy())
    np.testing.assert_allclose(omega.numpy(), expected, rtol=1e-3, atol=1e-9 + 1e-4 * abs(expected[axis]))


@pytest.mark.parametrize("up_motors, vel_axis, vel_sign", [((2, 3), 1, -1), ((0, 3), 0, -1)], ids=["roll", "pitch"])
def test_tilt_from_differential_thrust_moves_the_drone_the_physical_way(up_motors, vel_axis, vel_sign):
    """Left side up -> tilts right -> drifts to -y; nose up -> tilts back -> drifts to -x."""
    env = make_env(num_envs=1, num_drones=1, num_neighbors=0)
    act = hover_action(env)
    act[0, 0, list(up_motors)] += 0.01
    act[0, 0, [i for i in range(4) if i not in up_motors]] -= 0.01
    for _ in range(3):
        env.step(act)
    for _ in range(20):
        env.step(hover_action(env))
    s = snapshot(env)
    assert vel_sign * float(s.vel[0, 0, vel_axis]) > 1e-3, f"vel={s.vel[0, 0].tolist()}"


# ----------------------------------------------------------------------- long runs, orthonormality


def test_long_random_run_stays_finite_and_rotations_orthonormal():
    """4 envs x 4 drones x 10,000 control steps with random actions, thrust and sensor noise, downwash,
    domain randomisation and obstacles: no NaN/inf anywhere, and every rotation matrix stays orthonormal."""
    env = make_env(
        num_envs=4,
        num_drones=4,
        scenario="o_random",
        num_neighbors=2,
        dynamics={"thrust_noise": 0.05, "downwash": True},
        noise={"enabled": True},
        randomization={"mass": 0.1, "inertia": 0.1, "thrust_to_weight": 0.1},
    )
    gen = torch.Generator().manual_seed(123)
    hover = hover_action(env)
    eye = torch.eye(3)
    worst_orth, worst_det = 0.0, 0.0
    with torch.inference_mode():  # as a trainer collects rollouts (and ~20 % faster)
        for k in range(10_000):
            act = torch.rand(4, 4, 4, generator=gen) * 2 - 1
            act[2:] = (hover[2:] + 0.3 * act[2:]).clamp(-1, 1)  # envs 2, 3 mostly airborne, tumbling
            obs, rew, term, trunc, info = env.step(act)
            assert bool(torch.isfinite(obs).all() & torch.isfinite(rew).all()), f"non-finite obs or reward at step {k}"
            if "final_obs" in info:
                assert torch.isfinite(info["final_obs"]).all()
                assert all(torch.isfinite(v).all() for v in info["episode"].values())
            if k % 7 == 0:  # 7 is coprime with the re-orthonormalisation period: every phase gets checked
                rot = env.get_state(all_ids(env)).rot
                worst_orth = max(worst_orth, float((rot.transpose(-1, -2) @ rot - eye).abs().max()))
                worst_det = max(worst_det, float((torch.linalg.det(rot) - 1).abs().max()))
    assert worst_orth < 1e-4, f"|R^T R - I| reached {worst_orth:.2e}"
    # The periodic re-orthonormalisation keeps float32 drift at ~2e-6 (without it: ~2e-5 after 10k steps).
    assert worst_orth < 1e-5, f"|R^T R - I| reached {worst_orth:.2e}: is the attitude re-orthonormalised?"
    assert worst_det < 1e-4, f"|det R - 1| reached {worst_det:.2e}"


# ----------------------------------------------------------------------------------------- downwash


@pytest.mark.parametrize("gap", [0.3, 0.5])
def test_downwash_pushes_down_only_the_drone_below(gap):
    env = make_env(num_envs=1, num_drones=3, dynamics={"downwash": True})
    snap = snapshot(env)
    snap.pos[0] = torch.tensor([[0.0, 0.0, 1.5], [0.05, 0.0, 1.5 + gap], [-0.15, 0.0, 1.5]])
    snap.goals[0] = snap.pos[0]
    restore(env, snap)
    env.step(hover_action(env))
    vz = snapshot(env).vel[0, :, 2]
    cdt = env.cfg.dynamics.control_dt
    expected = -(6.0 / 17.0) * (7.0 - 10.0 * gap) * cdt  # inside the 0.1 m x 0.7 m cylinder under drone 1
    assert abs(float(vz[0]) - expected) < 2e-4, f"vz below = {float(vz[0]):.5f}, expected {expected:.5f}"
    assert abs(float(vz[1])) < 1e-5, "the drone above is not affected"
    assert abs(float(vz[2])) < 1e-5, "a drone 0.2 m to the side is not affected"


# ------------------------------------------------------------------------------------- determinism


def _rollout(seed, steps=60):
    env = make_env(
        num_envs=2,
        num_drones=3,
        scenario="o_random",
        num_neighbors=2,
        seed=seed,
        dynamics={"thrust_noise": 0.05, "downwash": True},
        noise={"enabled": True},
    )
    gen = torch.Generator().manual_seed(99)  # same action sequence for every seed
    out = [env.reset(seed=seed).clone()]
    for _ in range(steps):
        obs, rew, *_ = env.step(torch.rand(2, 3, 4, generator=gen) * 2 - 1)
        out += [obs.clone(), rew.clone()]
    return out


def test_same_seed_gives_identical_trajectories_and_different_seeds_differ():
    a, b, c = _rollout(7), _rollout(7), _rollout(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), "same seed, different trajectory"
    assert not torch.equal(a[0], c[0]), "different seeds gave the same initial observation"
    assert not torch.equal(a[-2], c[-2])


def test_reset_with_seed_reproduces_the_episode():
    env = make_env(num_envs=2, num_drones=3, dynamics={"thrust_noise": 0.05}, seed=5)
    first = env.reset(seed=11).clone()
    act = hover_action(env)
    o1 = [env.step(act)[0].clone() for _ in range(5)]
    assert torch.equal(env.reset(seed=11), first)
    o2 = [env.step(act)[0].clone() for _ in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(o1, o2, strict=True))


def test_reset_with_seed_reproduces_the_episode_whatever_ran_before():
    """An episode after reset(seed) must not depend on how many steps the env ran before the reset
    (the periodic attitude re-orthonormalisation included)."""
    gen = torch.Generator().manual_seed(2)
    hover = 2.0 / make_config().dynamics.thrust_to_weight - 1.0
    acts = [hover + 0.3 * (2 * torch.rand(2, 2, 4, generator=gen) - 1) for _ in range(60)]
    runs = []
    for warmup in (0, 7):
        env = make_env(num_envs=2, num_drones=2, seed=1)
        for a in acts[:warmup]:
            env.step(a)
        out = [env.reset(seed=11).clone()]
        out += [env.step(a)[0].clone() for a in acts]
        runs.append(out)
    for k, (x, y) in enumerate(zip(*runs, strict=True)):
        assert torch.equal(x, y), (
            f"episode after reset(seed) differs at step {k} (max |diff| {float((x - y).abs().max()):.1e})"
        )


# ---------------------------------------------------------------------------------- floor and walls


def test_zero_thrust_drone_lands_and_stays_on_the_floor():
    env = make_env(num_envs=2, num_drones=2)
    arm = env.cfg.dynamics.arm
    snap = snapshot(env)
    snap.motor.zero_()
    snap.pos[..., 2] = 0.5
    restore(env, snap)
    act = const_action(env, -1.0)
    for _ in range(100):  # falls 0.45 m in ~0.3 s, then rests
        obs, rew, *_ = env.step(act)
        s = snapshot(env)
        assert torch.isfinite(obs).all() and torch.isfinite(rew).all()
        assert float(s.pos[..., 2].min()) >= arm - 1e-6, "drone went through the floor"
    assert torch.allclose(s.pos[..., 2], torch.full_like(s.pos[..., 2], arm), atol=1e-5)
    assert float(s.vel.abs().max()) < 1e-6
    assert torch.allclose(s.pos[..., :2], snap.pos[..., :2], atol=1e-6)
    assert torch.allclose(obs[..., 18], torch.full_like(obs[..., 18], arm), atol=1e-5)


def test_floor_friction_decelerates_a_sliding_drone_to_rest():
    env = make_env(num_envs=1, num_drones=2)
    dyn = env.cfg.dynamics
    snap = snapshot(env)
    snap.motor.zero_()
    snap.pos[..., 2] = dyn.arm
    snap.vel.zero_()
    snap.vel[..., 0] = 1.0
    restore(env, snap)
    act = const_action(env, -1.0)
    for _ in range(10):
        env.step(act)
    decel = dyn.floor_friction * dyn.gravity * dyn.dt  # per physics step
    vx = snapshot(env).vel[..., 0]
    assert torch.allclose(vx, torch.full_like(vx, 1.0 - 10 * dyn.sim_steps * decel), atol=1e-4)
    for _ in range(30):
        env.step(act)
    s = snapshot(env)
    assert float(s.vel[..., :2].abs().max()) < 1e-6, "friction should stop the drone, not reverse it"


def test_drone_outside_the_room_is_clipped_back_inside():
    env = make_env(num_envs=1, num_drones=3, grace_seconds=0.0, episode_seconds=0.1)
    dyn, room = env.cfg.dynamics, env.cfg.room
    snap = snapshot(env)
    snap.pos[0, 0] = torch.tensor([room[0] / 2 + 0.3, 0.0, 2.0])
    snap.vel[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    snap.pos[0, 1] = torch.tensor([1.0, -room[1] / 2 - 0.4, 2.0])
    snap.vel[0, 1] = torch.tensor([0.0, -1.0, 0.0])
    snap.pos[0, 2] = torch.tensor([-1.0, 1.0, room[2] + 0.5])
    snap.vel[0, 2] = torch.tensor([0.0, 0.0, 1.0])
    restore(env, snap)
    obs, *_ = env.step(hover_action(env))
    s = snapshot(env)
    lo = torch.tensor([-room[0] / 2, -room[1] / 2, dyn.arm]) - 1e-6
    hi = torch.tensor([room[0] / 2, room[1] / 2, room[2]]) + 1e-6
    assert torch.all((s.pos >= lo) & (s.pos <= hi)), f"positions outside the room: {s.pos.tolist()}"
    normal = [float(s.vel[0, 0, 0]), float(s.vel[0, 1, 1]), float(s.vel[0, 2, 2])]
    assert normal[0] < 0 and normal[1] > 0 and normal[2] < 0, f"normal velocity not reversed: {normal}"
    assert torch.isfinite(obs).all()
    info = {}
    for _ in range(env.episode_steps - 1):
        *_, info = env.step(hover_action(env))
    assert float(info["episode"]["wall_collision_rate"][0]) == 1.0
