"""envs.predator_prey_v0: PettingZoo conformance, observations, rewards, episode ends, bad input."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test

from envs import predator_prey_v0
from envs.predator_prey_v0 import METRICS_KEY, PREY_REWARD, TIMESTEP_PENALTY, obs_dim

STAY, UP, RIGHT = 4, 0, 1


def test_parallel_api():
    parallel_api_test(predator_prey_v0.parallel_env(), num_cycles=100)
    parallel_api_test(predator_prey_v0.parallel_env(grid_size=3, vision=0, num_predators=2, max_steps=5), num_cycles=50)


def test_aec_api_and_seeding():
    api_test(predator_prey_v0.env(), num_cycles=50)
    parallel_seed_test(lambda: predator_prey_v0.parallel_env(max_steps=10))


def test_spaces_and_observation():
    env = predator_prey_v0.parallel_env(grid_size=6, vision=2, num_predators=4)
    obs, infos = env.reset(seed=3)
    assert env.agents == [f"predator_{i}" for i in range(4)]
    assert env.observation_space("predator_0") is env.observation_space("predator_0")
    assert env.action_space("predator_1").n == 5
    assert env.obs_layout.dim == obs_dim(2) == 3 + 3 * 25
    for agent, o in obs.items():
        assert o.shape == (obs_dim(2),) and o.dtype == np.float32 and env.observation_space(agent).contains(o)
    # The predator's own cell (window centre) never counts itself.
    i = 0
    own = env._predators[i]
    others_here = ((env._predators == own).all(-1).sum() - 1) / 4
    cells = obs["predator_0"][3:].reshape(5, 5, 3)
    assert cells[2, 2, 0] == pytest.approx(others_here)
    assert cells[2, 2, 2] == 0.0  # the own cell is inside the grid


def _place(env, predators, prey):
    env._predators = np.array(predators, np.int64)
    env._prey = np.array(prey, np.int64)
    return env._observations()


def test_vision_window_sees_prey_and_walls():
    env = predator_prey_v0.parallel_env(grid_size=5, vision=1, num_predators=2)
    env.reset(seed=0)
    obs = _place(env, [[0, 0], [4, 4]], [1, 1])
    cells = obs["predator_0"][3:].reshape(3, 3, 3)  # [dx + 1, dy + 1, channel]
    assert cells[2, 2, 1] == 1.0 and cells[:, :, 1].sum() == 1.0  # prey at (+1, +1)
    assert cells[0, :, 2].all() and cells[:, 0, 2].all() and cells[1:, 1:, 2].sum() == 0  # walls at x, y = -1
    far = obs["predator_1"][3:].reshape(3, 3, 3)
    assert far[:, :, 1].sum() == 0.0  # out of sight
    np.testing.assert_allclose(obs["predator_1"][:3], [1.0, 1.0, 0.0])


def test_rewards_moves_and_success():
    env = predator_prey_v0.parallel_env(grid_size=5, vision=1, num_predators=2, max_steps=20)
    env.reset(seed=0)
    _place(env, [[2, 1], [0, 2]], [2, 2])
    obs, rew, term, trunc, infos = env.step({"predator_0": UP, "predator_1": STAY})
    assert rew == {"predator_0": PREY_REWARD * 1, "predator_1": TIMESTEP_PENALTY}
    assert not any(term.values()) and not any(trunc.values()) and infos["predator_0"]["on_prey"]
    # On the prey a predator stays put whatever it is told.
    obs, rew, term, trunc, infos = env.step({"predator_0": UP, "predator_1": RIGHT})
    assert tuple(env._predators[0]) == (2, 2) and tuple(env._predators[1]) == (1, 2)
    obs, rew, term, trunc, infos = env.step({"predator_0": STAY, "predator_1": RIGHT})
    assert rew == {"predator_0": 2 * PREY_REWARD, "predator_1": 2 * PREY_REWARD}  # together pays more
    assert all(term.values()) and not any(trunc.values()) and env.agents == []
    assert infos["predator_1"][METRICS_KEY] == {"success": 1.0, "steps": 3.0, "predators_on_prey": 1.0}


def test_walls_and_truncation():
    env = predator_prey_v0.parallel_env(grid_size=3, vision=0, num_predators=1, max_steps=2)
    env.reset(seed=1)
    _place(env, [[0, 2]], [2, 0])
    env.step({"predator_0": UP})
    assert tuple(env._predators[0]) == (0, 2)  # the wall
    _, rew, term, trunc, infos = env.step({"predator_0": RIGHT})
    assert trunc == {"predator_0": True} and term == {"predator_0": False} and env.agents == []
    assert infos["predator_0"][METRICS_KEY]["success"] == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="grid_size=1"):
        predator_prey_v0.parallel_env(grid_size=1)
    with pytest.raises(ValueError, match="vision=-1"):
        predator_prey_v0.parallel_env(vision=-1)
    with pytest.raises(ValueError, match="num_predators=9 must be < grid_size"):
        predator_prey_v0.parallel_env(grid_size=3, num_predators=9)
    with pytest.raises(ValueError, match="unknown predator_prey_v0 option"):
        predator_prey_v0.parallel_env(dim=5)
    env = predator_prey_v0.parallel_env(num_predators=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action for predator_1 must be an integer in"):
        env.step({"predator_0": 0, "predator_1": 7})
    with pytest.raises(ValueError, match="action for predator_0"):
        env.step({"predator_0": 0.5, "predator_1": 0})
    with pytest.raises(ValueError, match="missing: \\['predator_1'\\]"):
        env.step({"predator_0": 0})


def test_envs_does_not_import_learning_code():
    tree = ast.parse(pathlib.Path(predator_prey_v0.__file__).read_text())
    roots = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not roots & {"agents", "marl", "optim", "deploy", "torch"}
