"""PettingZoo conformance and behaviour of envs.quad_swarm_v0 (short episodes: 0.3 s = 30 steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from helpers import strict_api_warnings
from pettingzoo.test import api_test, parallel_api_test

from envs import quad_swarm_v0
from envs.config import make_config
from envs.metrics import METRIC_NAMES
from envs.swarm import QuadSwarmVecEnv

CFG = dict(num_drones=4, num_neighbors=2, scenario="o_random", episode_seconds=0.3)
STEPS = 30  # episode_seconds / control_dt = 0.3 / 0.01


def _zero_actions(env) -> dict[str, np.ndarray]:
    return {a: np.zeros(4, np.float32) for a in env.agents}


def test_parallel_api_passes_through_episode_end():
    with strict_api_warnings():
        # num_cycles beyond the episode length, so the truncation path is exercised too.
        parallel_api_test(quad_swarm_v0.parallel_env(**CFG), num_cycles=STEPS + 10)


def test_aec_api():
    with strict_api_warnings():
        api_test(quad_swarm_v0.env(**CFG), num_cycles=STEPS + 10)


def test_spaces_agents_and_spec():
    env = quad_swarm_v0.parallel_env(**CFG)
    assert env.possible_agents == ["drone_0", "drone_1", "drone_2", "drone_3"]
    assert env.metadata["name"] == "quad_swarm_v0"
    dim = 19 + 6 * 2 + 9
    assert env.obs_spec.dim == dim
    for a in env.possible_agents:
        assert env.observation_space(a) is env.observation_space(a)
        assert env.action_space(a) is env.action_space(a)
        assert env.observation_space(a) == spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        assert env.action_space(a) == spaces.Box(-1, 1, (4,), np.float32)
    obs, infos = env.reset(seed=3)
    assert set(obs) == set(infos) == set(env.possible_agents)
    assert all(o.dtype == np.float32 and o.shape == (dim,) for o in obs.values())


def test_episode_end_returns_final_obs_and_metrics():
    env = quad_swarm_v0.parallel_env(**CFG)
    env.reset(seed=1)
    # Reference run on the core with the same seed, to check the final obs is not the auto-reset one.
    core = QuadSwarmVecEnv(make_config(**CFG), num_envs=1)
    core.reset(seed=1)
    for t in range(1, STEPS + 1):
        obs, rew, term, trunc, infos = env.step(_zero_actions(env))
        _, core_rew, _, _, core_info = core.step(torch.zeros(1, 4, 4))
        assert all(isinstance(r, float) for r in rew.values())
        assert all(isinstance(x, bool) for x in [*term.values(), *trunc.values()])
        np.testing.assert_allclose(list(rew.values()), core_rew[0].numpy(), rtol=1e-6)
        if t < STEPS:
            assert not any(trunc.values()) and not any(term.values())
            assert env.agents == env.possible_agents
            assert all(info == {} for info in infos.values())
    assert all(trunc.values()) and not any(term.values())
    assert env.agents == []
    final = core_info["final_obs"][0].numpy()
    for i, a in enumerate(env.possible_agents):
        np.testing.assert_array_equal(obs[a], final[i])
        metrics = infos[a][quad_swarm_v0.METRICS_KEY]
        assert set(metrics) == set(METRIC_NAMES)
        assert all(isinstance(v, float) for v in metrics.values())
        assert metrics["episode_length"] == STEPS
        assert infos[a]["scenario"] == "o_random"
    # Per-agent info dicts are independent objects.
    assert infos["drone_0"][quad_swarm_v0.METRICS_KEY] is not infos["drone_1"][quad_swarm_v0.METRICS_KEY]
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    obs, _ = env.reset()
    assert env.agents == env.possible_agents and set(obs) == set(env.agents)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda acts: acts.pop("drone_2"), "drone_2"),
        (lambda acts: acts.__setitem__("drone_9", np.zeros(4)), "drone_9"),
        (lambda acts: acts.__setitem__("drone_1", np.zeros(3)), "drone_1.*shape"),
        (lambda acts: acts.__setitem__("drone_1", np.array([0, np.nan, 0, 0])), "drone_1.*NaN"),
        (lambda acts: acts.__setitem__("drone_3", None), "drone_3"),
        (lambda acts: acts.__setitem__("drone_0", "up"), "drone_0"),
        (lambda acts: acts.__setitem__("drone_0", [[0.0, 0.0], [0.0]]), "drone_0"),
    ],
)
def test_bad_action_dict_raises(mutate, match):
    env = quad_swarm_v0.parallel_env(**CFG)
    env.reset(seed=0)
    acts = _zero_actions(env)
    mutate(acts)
    with pytest.raises(ValueError, match=match):
        env.step(acts)


def test_actions_accept_lists_and_tensors():
    env = quad_swarm_v0.parallel_env(**CFG)
    env.reset(seed=0)
    acts = {
        "drone_0": [0.0, 0.0, 0.0, 0.0],
        "drone_1": torch.zeros(4),
        "drone_2": np.zeros(4, int),
        "drone_3": np.zeros(4, np.float64),
    }
    obs, *_ = env.step(acts)
    assert set(obs) == set(env.possible_agents)


def test_same_seed_same_observations():
    def rollout(seed: int) -> list[np.ndarray]:
        env = quad_swarm_v0.parallel_env(**CFG)
        obs, _ = env.reset(seed=seed)
        out = [np.stack(list(obs.values()))]
        rng = np.random.default_rng(0)
        for _ in range(10):
            obs, *_ = env.step({a: rng.uniform(-1, 1, 4).astype(np.float32) for a in env.agents})
            out.append(np.stack(list(obs.values())))
        # An unseeded reset after a seeded one is reproducible too.
        obs, _ = env.reset()
        out.append(np.stack(list(obs.values())))
        return out

    a, b, c = rollout(7), rollout(7), rollout(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_seed_matches_core_reset():
    env = quad_swarm_v0.parallel_env(**CFG)
    obs, _ = env.reset(seed=5)
    core = QuadSwarmVecEnv(make_config(**CFG), num_envs=1)
    np.testing.assert_array_equal(np.stack(list(obs.values())), core.reset(seed=5)[0].numpy())


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="num_drone"):
        quad_swarm_v0.parallel_env(num_drone=4)
    with pytest.raises(ValueError, match="render_mode"):
        quad_swarm_v0.parallel_env(render_mode="human", **CFG)


def test_close_is_idempotent():
    env = quad_swarm_v0.env(**CFG)
    env.reset(seed=0)
    env.close()
    env.close()
