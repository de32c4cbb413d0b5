"""Gymnasium conformance and behaviour of the single-drone envs (short episodes: 0.3 s = 30 steps)."""

from __future__ import annotations

import importlib
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.gym_envs import QuadSingleEnv
from envs.metrics import METRIC_NAMES
from envs.quad_swarm_v0 import METRICS_KEY

IDS = ["QuadHover-v0", "QuadGoal-v0", "QuadGoalObstacles-v0"]
SHORT = dict(episode_seconds=0.3)
STEPS = 30  # episode_seconds / control_dt = 0.3 / 0.01


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    env = gymnasium.make(env_id, **SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The unbounded observation Box is deliberate (positions, velocities, rates have no hard bound).
        warnings.filterwarnings("ignore", message=".*observation space m.* value is .*infinity")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize(("env_id", "scenario"), list(envs.GYM_ENV_IDS.items()))
def test_make_after_import(env_id, scenario):
    env = gymnasium.make(env_id, **SHORT)
    assert isinstance(env.unwrapped, QuadSingleEnv)
    assert env.unwrapped.cfg.scenario == scenario
    assert env.observation_space.shape == (28,) and env.observation_space.dtype == np.float32
    assert env.action_space == gymnasium.spaces.Box(-1, 1, (4,), np.float32)
    assert env.unwrapped.obs_spec.dim == 28
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (28,) and info == {}
    env.close()


def test_reimport_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
    assert set(IDS) <= set(gymnasium.registry)


@pytest.mark.parametrize("env_id", IDS)
def test_random_episode_truncates_at_step_count(env_id):
    env = gymnasium.make(env_id, **SHORT)
    env.reset(seed=0)
    env.action_space.seed(0)
    for t in range(1, STEPS + 1):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert not terminated
        assert truncated == (t == STEPS)
        assert (METRICS_KEY in info) == (t == STEPS)
    metrics = info[METRICS_KEY]
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["episode_length"] == STEPS
    assert info["scenario"] == env.unwrapped.cfg.scenario
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())
    env.reset()
    env.step(env.action_space.sample())
    env.close()


def test_final_obs_is_last_state_not_autoreset():
    env = QuadSingleEnv(scenario="hover", **SHORT)
    first, _ = env.reset(seed=4)
    for _ in range(STEPS):
        obs, *_ = env.step(np.zeros(4, np.float32))
    # The final obs continues the episode: the hover drone has moved (zero action = half thrust, it
    # sinks), whereas the core's auto-reset obs would sit at a fresh start with zero velocity.
    assert not np.array_equal(obs, first)
    assert np.abs(obs[3:6]).max() > 0.1


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.zeros(3, np.float32), "shape"),
        (np.zeros((1, 4), np.float32), "shape"),
        (np.array([0.0, np.nan, 0.0, 0.0], np.float32), "NaN"),
        (np.array([np.inf, 0.0, 0.0, 0.0]), "NaN or inf"),
        (None, "real numbers"),
    ],
)
def test_bad_action_raises(action, match):
    env = QuadSingleEnv(scenario="o_random", **SHORT)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_step_before_reset_raises():
    env = QuadSingleEnv(**SHORT)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4, np.float32))


def test_config_errors():
    with pytest.raises(ValueError, match="num_drones"):
        QuadSingleEnv(num_drones=2)
    with pytest.raises(ValueError, match="episode_secs"):
        gymnasium.make("QuadHover-v0", episode_secs=1.0)


def test_seeded_episodes_reproduce():
    def run(seed: int) -> np.ndarray:
        env = gymnasium.make("QuadGoalObstacles-v0", **SHORT)
        out = [env.reset(seed=seed)[0]]
        env.action_space.seed(seed)
        for _ in range(5):
            out.append(env.step(env.action_space.sample())[0])
        out.append(env.reset()[0])
        return np.stack(out)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_close_twice():
    env = gymnasium.make("QuadHover-v0", **SHORT)
    env.close()
    env.close()
