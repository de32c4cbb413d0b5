"""The batched vector env: API contract, auto-reset and metrics, snapshots, scenarios, reward clip."""

import numpy as np
import pytest
import torch

from envs.config import make_config
from envs.maps import FAR
from envs.metrics import METRIC_NAMES
from envs.scenarios import SCENARIO_NAMES, SCENARIOS
from envs.swarm import QuadSwarmVecEnv

RATES = [n for n in METRIC_NAMES if n.endswith("_rate")]


def make_env(num_envs=2, num_drones=3, seed=0, dynamics=None, **kwargs):
    dyn = {"thrust_noise": 0.0, **(dynamics or {})}
    kwargs.setdefault("num_neighbors", min(2, num_drones - 1))
    env = QuadSwarmVecEnv(make_config(num_drones=num_drones, dynamics=dyn, **kwargs), num_envs=num_envs)
    env.reset(seed=seed)
    return env


def ids(env):
    return list(range(env.num_envs))


def hover(env):
    tw = env.cfg.dynamics.thrust_to_weight
    return torch.full((env.num_envs, env.num_drones, 4), 2.0 / tw - 1.0)


def random_actions(env, steps, seed=0, scale=0.3):
    """Actions near hover (so that nothing crashes within a few dozen steps)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        (hover(env) + scale * (2 * torch.rand(hover(env).shape, generator=gen) - 1)).clamp(-1, 1) for _ in range(steps)
    ]


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("num_envs, num_drones, k", [(3, 4, 2), (1, 1, 0), (2, 8, 6)])
def test_shapes_and_dtypes(num_envs, num_drones, k):
    env = make_env(num_envs=num_envs, num_drones=num_drones, num_neighbors=k)
    obs = env.reset(seed=1)
    d = 19 + 6 * k + 9
    assert env.obs_dim == d == env.cfg.obs_dim
    assert obs.shape == (num_envs, num_drones, d) and obs.dtype == torch.float32
    obs, rew, term, trunc, info = env.step(hover(env))
    assert obs.shape == (num_envs, num_drones, d) and obs.dtype == torch.float32
    assert rew.shape == (num_envs, num_drones) and rew.is_floating_point()
    assert term.shape == trunc.shape == (num_envs, num_drones)
    assert term.dtype == torch.bool and trunc.dtype == torch.bool
    assert not term.any() and not trunc.any()
    assert isinstance(info, dict) and "episode" not in info


def test_observation_layout():
    env = make_env(num_envs=2, num_drones=4, num_neighbors=2, scenario="static_diff_goal")
    for _ in range(3):
        obs, *_ = env.step(random_actions(env, 1, seed=4, scale=0.5)[0])
    s = env.get_state(ids(env))
    assert torch.allclose(obs[..., 0:3], s.pos - s.goals, atol=1e-6)
    assert torch.allclose(obs[..., 3:6], s.vel, atol=1e-6)
    assert torch.allclose(obs[..., 6:15], s.rot.reshape(2, 4, 9), atol=1e-6)  # row-major
    assert torch.allclose(obs[..., 15:18], s.omega, atol=1e-6)
    assert torch.allclose(obs[..., 18], s.pos[..., 2], atol=1e-6)
    # no obstacles in this scenario: SDF saturated at sdf_max
    assert torch.allclose(obs[..., 31:40], torch.full((2, 4, 9), env.cfg.sdf_max))


def test_neighbours_ranked_by_distance_plus_closing_speed():
    """Score = distance + dot(unit relative position, relative velocity): one closing in ranks first."""
    env = make_env(num_envs=1, num_drones=4, num_neighbors=2, scenario="static_diff_goal")
    snap = env.get_state([0])
    snap.pos[0] = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.5, 2.0], [-3.0, 0.0, 2.0]])
    snap.vel[0] = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    obs = env.set_state([0], snap)[0, 0]
    # drone 1: 1.0 + 3.0 = 4.0; drone 2: 1.5 - 3.0 = -1.5; drone 3: 3.0 -> order 2, 3
    assert torch.allclose(obs[19:25], torch.tensor([0.0, 1.5, 0.0, 0.0, -3.0, 0.0]))
    assert torch.allclose(obs[25:31], torch.tensor([-3.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    # drone 3: drone 2 (3.354 - 4.5 / 3.354 = 2.01), then drone 0 (3.0); drone 1 (4.0 + 3.0) is left out
    obs3 = env.set_state([0], snap)[0, 3]
    assert torch.allclose(obs3[19:22], torch.tensor([3.0, 1.5, 0.0])) and torch.allclose(
        obs3[25:28], torch.tensor([3.0, 0.0, 0.0])
    )


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "make_bad, err",
    [
        (lambda a: a[..., :3], ValueError),
        (lambda a: a.reshape(-1, 4), ValueError),
        (lambda a: a[:1], ValueError),
        (lambda a: a.unsqueeze(0), ValueError),
        (
            lambda a: a.index_put(
                (torch.tensor([1]), torch.tensor([2]), torch.tensor([0])), torch.tensor(float("nan"))
            ),
            ValueError,
        ),
        (
            lambda a: a.index_put(
                (torch.tensor([0]), torch.tensor([0]), torch.tensor([3])), torch.tensor(float("inf"))
            ),
            ValueError,
        ),
        (lambda a: torch.full_like(a, -float("inf")), ValueError),
        (lambda a: a.long(), (TypeError, ValueError)),
        (lambda a: torch.zeros(a.shape, dtype=torch.int32), (TypeError, ValueError)),
        (lambda a: a > 0, (TypeError, ValueError)),
    ],
    ids=["motors3", "flat", "envs", "extra-dim", "nan", "inf", "-inf", "int64", "int32", "bool"],
)
def test_malformed_actions_raise(make_bad, err):
    env = make_env()
    before = env.get_state(ids(env))
    with pytest.raises(err):
        env.step(make_bad(hover(env)))
    after = env.get_state(ids(env))
    assert torch.equal(before.pos, after.pos) and torch.equal(before.t, after.t), "a rejected step changed the state"


def test_numpy_float_actions_accepted_and_out_of_range_clipped():
    a, b = make_env(seed=3), make_env(seed=3)
    oa, *_ = a.step(np.full((2, 3, 4), 1.0))
    ob, *_ = b.step(torch.full((2, 3, 4), 7.5))
    assert torch.equal(oa, ob), "actions above 1 should act like 1"


def test_step_before_reset_raises():
    env = QuadSwarmVecEnv(make_config(num_drones=2, num_neighbors=1), num_envs=2)
    with pytest.raises(RuntimeError):
        env.step(torch.zeros(2, 2, 4))


# ------------------------------------------------------------------------------------- auto-reset


def test_auto_reset_at_episode_end_with_metrics():
    env = make_env(num_envs=3, num_drones=4, scenario="o_random", episode_seconds=0.2, grace_seconds=0.0)
    n = env.episode_steps
    assert n == 20
    acts = random_actions(env, n + 5, seed=1)
    for k in range(1, n):
        obs, rew, term, trunc, info = env.step(acts[k - 1])
        assert not trunc.any() and not term.any() and "episode" not in info and "final_obs" not in info, k
    last_state = env.get_state(ids(env))
    obs, rew, term, trunc, info = env.step(acts[n - 1])
    assert trunc.all() and not term.any()
    assert info["final_obs"].shape == obs.shape
    assert not torch.equal(info["final_obs"], obs)
    assert torch.equal(info["episode_env_ids"].sort().values, torch.arange(3))
    ep = info["episode"]
    assert set(METRIC_NAMES) <= set(ep), f"missing metrics: {set(METRIC_NAMES) - set(ep)}"
    for name in METRIC_NAMES:
        assert ep[name].shape == (3,) and torch.isfinite(ep[name]).all(), name
    for name in RATES:
        assert torch.all((ep[name] >= 0) & (ep[name] <= 1)), f"{name} = {ep[name].tolist()}"
    total = ep["success_rate"] + ep["deadlock_rate"] + ep["collision_rate"]
    assert torch.allclose(total, torch.ones(3)), f"success + deadlock + collision = {total.tolist()}"
    assert torch.all(ep["episode_length"] == n)
    assert torch.all(ep["distance_to_goal_1s"] > 0)
    assert info["scenario"] == ["o_random"] * 3
    # episode_return is the per-drone mean of the summed rewards (check on the final step's reward)
    assert torch.allclose(ep["episode_return"], (last_state.ret + rew).mean(-1), atol=1e-4)
    # the returned obs is the first obs of a fresh episode
    s = env.get_state(ids(env))
    assert torch.all(s.t == 0) and torch.all(s.ret == 0) and not s.col_nbr.any() and not s.reached.any()
    assert torch.all(s.vel == 0)
    assert torch.allclose(obs, env.set_state(ids(env), s))
    assert torch.allclose(obs[..., 0:3], s.pos - s.goals, atol=1e-6)
    assert not torch.allclose(s.pos, last_state.pos, atol=1e-3), "positions were not re-drawn"
    # and the next episode runs its full length again
    for k in range(1, 4):
        *_, trunc, info = env.step(acts[n - 1 + k])
        assert not trunc.any() and "episode" not in info


def test_distance_to_goal_metrics_average_the_last_seconds():
    env = make_env(
        num_envs=1,
        num_drones=2,
        num_neighbors=1,
        scenario="static_same_goal",
        episode_seconds=5.2,
        dynamics={"physics_hz": 100.0},
    )  # 0.02 s control steps: 260 steps
    act = hover(env)
    act[0, 0] += 0.01  # drone 0 climbs slowly: its distance to the goal changes every step
    dists, info = [], {}
    while "episode" not in info:
        obs, _, _, _, info = env.step(act)
        final = info.get("final_obs", obs)
        dists.append(final[0, :, 0:3].norm(dim=-1).mean())
    dists = torch.stack(dists)
    assert len(dists) == env.episode_steps
    cdt = env.cfg.dynamics.control_dt
    for sec in (1, 3, 5):
        want = dists[-int(round(sec / cdt)) :].mean()
        got = info["episode"][f"distance_to_goal_{sec}s"][0]
        assert torch.isclose(got, want, rtol=1e-4), (sec, float(got), float(want))
    assert not torch.isclose(info["episode"]["distance_to_goal_1s"][0], info["episode"]["distance_to_goal_5s"][0])


# ------------------------------------------------------------------------------- state snapshots


def test_get_set_state_round_trip_single_env():
    env = make_env(num_envs=3, num_drones=3, scenario="o_random")
    acts = random_actions(env, 20, seed=2)
    for a in random_actions(env, 5, seed=9):
        obs, *_ = env.step(a)
    snap = env.get_state([1])
    first = [env.step(a)[0][1].clone() for a in acts]
    restored = env.set_state([1], snap)
    assert torch.equal(restored[1], obs[1]), "restored obs differs from the obs at snapshot time"
    second = [env.step(a)[0][1].clone() for a in acts]
    for k, (x, y) in enumerate(zip(first, second, strict=True)):
        assert torch.equal(x, y), f"env 1 diverged after restoring, step {k}"


def test_snapshot_is_a_detached_copy():
    env = make_env()
    snap = env.get_state([0, 1])
    pos = snap.pos.clone()
    env.step(hover(env) + 0.5)
    assert torch.equal(snap.pos, pos), "stepping changed a snapshot"
    snap.pos += 1.0
    assert not torch.equal(env.get_state([0, 1]).pos, snap.pos), "editing a snapshot changed the env"


def test_get_set_state_round_trip_with_noise_and_generator_state():
    env = make_env(
        num_envs=2, num_drones=3, scenario="o_random", dynamics={"thrust_noise": 0.05}, noise={"enabled": True}
    )
    acts = random_actions(env, 20, seed=3)
    snap, gen_state = env.get_state(ids(env)), env.gen.get_state()
    first = [env.step(a)[0].clone() for a in acts]
    env.set_state(ids(env), snap)
    env.gen.set_state(gen_state)
    second = [env.step(a)[0].clone() for a in acts]
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


def test_restored_env_replays_exactly_across_a_reorthonormalisation_step():
    """Collision replay restores single envs, so envs run at different t. A restored env must follow the
    same trajectory as the original, including the periodic re-orthonormalisation of its attitude."""
    env = make_env(num_envs=2, num_drones=2, num_neighbors=1, scenario="static_diff_goal")
    period = int(round(env.cfg.dynamics.orthonormalize_seconds / env.cfg.dynamics.control_dt))
    for a in random_actions(env, period - 10, seed=5, scale=0.6):
        env.step(a)
    snap = env.get_state([1])  # t = period - 10 in both envs
    acts = random_actions(env, 20, seed=6, scale=0.6)
    first = [env.step(a)[0][1].clone() for a in acts]  # env 1 crosses t = period
    env.set_state([1], snap)  # env 1 back at period - 10, env 0 now at period + 10
    second = [env.step(a)[0][1].clone() for a in acts]
    for k, (x, y) in enumerate(zip(first, second, strict=True)):
        diff = float((x - y).abs().max())
        assert torch.equal(x, y), f"restored env diverged at step {k} (t = {period - 10 + k + 1}): |diff| {diff:.1e}"


def test_set_state_rejects_mismatched_snapshots():
    env = make_env(num_envs=3)
    with pytest.raises(ValueError):
        env.set_state([0, 1], env.get_state([0]))
    other = make_env(num_envs=1, num_drones=4)
    with pytest.raises(ValueError):
        env.set_state([0], other.get_state([0]))


# ------------------------------------------------------------------------------------- scenarios


def test_scenario_mix_gives_both_scenarios_across_envs():
    env = make_env(num_envs=16, num_drones=3, scenario={"o_random": 1, "static_same_goal": 1})
    for _ in range(2):
        s = env.get_state(ids(env))
        names = {SCENARIO_NAMES[i] for i in s.scenario.tolist()}
        assert names == {"o_random", "static_same_goal"}
        for e in range(16):
            active = int((s.obstacles[e, :, 0].abs() < FAR / 2).sum())
            if SCENARIO_NAMES[int(s.scenario[e])] == "o_random":
                assert active == int(env.cfg.density * env.grid.gx * env.grid.gy)  # the reference layout
            else:
                assert active == 0, "obstacle-free scenario with columns"
                assert torch.allclose(s.goals[e], s.goals[e, :1].expand(3, 3)), "static_same_goal: one goal"
        env.reset()


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_scenario_runs_two_episodes(name):
    env = make_env(
        num_envs=2,
        num_drones=4,
        scenario=name,
        episode_seconds=0.12,
        goal_change_seconds=0.05,
        dynamics={"thrust_noise": 0.05},
    )
    spec = SCENARIOS[name]
    s0 = env.get_state(ids(env))
    if spec.hover:
        assert torch.allclose(s0.goals, s0.pos), "hover: goals are the starts"
    episodes = 0
    goals_changed = False
    for a in random_actions(env, 2 * env.episode_steps, seed=7):
        before = env.get_state(ids(env)).goals
        obs, rew, term, trunc, info = env.step(a)
        assert torch.isfinite(obs).all() and torch.isfinite(rew).all()
        if "episode" in info:
            episodes += 1
            assert info["scenario"] == [name, name]
            assert all(torch.isfinite(info["episode"][m]).all() for m in METRIC_NAMES)
        else:
            goals_changed |= not torch.equal(before, env.get_state(ids(env)).goals)
    assert episodes == 2
    assert goals_changed == (spec.event is not None), f"event {spec.event}: goals changed = {goals_changed}"


def test_swap_goals_event_reverses_the_assignment():
    env = make_env(num_envs=1, num_drones=4, scenario="swap_goals", goal_change_seconds=0.05)
    g0 = env.get_state([0]).goals.clone()
    for _ in range(int(round(0.05 / env.cfg.dynamics.control_dt))):
        env.step(hover(env))
    assert torch.allclose(env.get_state([0]).goals, g0.flip(1))


# ---------------------------------------------------------------------------------------- reward


def test_reward_is_clipped_on_both_sides():
    env = make_env(scenario="static_same_goal", reward={"pos": 1e4, "clip": 2.0})
    _, rew, *_ = env.step(hover(env))
    assert torch.all(rew == -2.0)
    env = make_env(scenario="hover", reward={"pos": 0.0, "orient": 1e4, "clip": 3.0})
    _, rew, *_ = env.step(hover(env))
    assert torch.all(rew == 3.0)


def test_reward_stays_within_clip_under_crashes():
    env = make_env(
        num_envs=2,
        num_drones=6,
        scenario="o_random",
        density=0.8,
        reward={"neighbour_collision": 50.0, "obstacle_collision": 50.0},
    )
    gen = torch.Generator().manual_seed(0)
    clip = env.cfg.reward.clip
    for _ in range(150):
        _, rew, *_ = env.step(torch.rand(2, 6, 4, generator=gen) * 2 - 1)
        assert float(rew.abs().max()) <= clip
    snap = env.get_state(ids(env))
    snap.pos[0, 1] = snap.pos[0, 0]
    snap.pos[0, 1, 0] += 0.03
    env.set_state(ids(env), snap)
    _, rew, *_ = env.step(hover(env))
    assert float(rew[0, 0]) == -clip and float(rew[0, 1]) == -clip


# ------------------------------------------------------------------------------------- time to goal


def test_time_to_goal_is_the_first_arrival_or_the_episode_length():
    """Three drones hovering (no thrust noise): one starts 0.3 m from its goal (inside the 0.5 m reach
    radius: arrives on the first step), one drifts towards its goal at 1 m/s from 0.9 m away (inside
    the radius after about 0.4 s), one is 4 m away and never arrives (counts the 1 s episode)."""
    env = make_env(num_envs=2, num_drones=3, scenario="static_diff_goal", episode_seconds=1.0, grace_seconds=0.0)
    snap = env.get_state(ids(env))
    for e in range(2):
        snap.pos[e] = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 2.0], [-2.0, 2.0, 2.0]])
        snap.vel[e] = 0.0
        snap.goals[e] = snap.pos[e] + torch.tensor([[0.3, 0.0, 0.0], [0.9, 0.0, 0.0], [4.0, 0.0, 0.0]])
    snap.vel[1, 1] = torch.tensor([1.0, 0.0, 0.0])  # env 1: drone 1 flies at its goal
    env.set_state(ids(env), snap)
    info = {}
    for _ in range(env.episode_steps):
        *_, info = env.step(hover(env))
    ttg = info["episode"]["time_to_goal"]
    dt, length = env.ctrl_dt, env.cfg.episode_seconds
    # env 0: 0.01 s, never, never; env 1: 0.01 s, ~0.4 s, never
    assert ttg[0].item() == pytest.approx((dt + 2 * length) / 3, abs=1e-5)
    assert ttg[1].item() == pytest.approx((dt + 0.4 + length) / 3, abs=0.03 / 3)
    assert info["episode"]["reached_goal_rate"][0].item() == pytest.approx(1 / 3)
