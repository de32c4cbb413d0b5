"""The SB3 features extractor (agents.sb3) on the single-drone Gymnasium envs."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402

import envs  # noqa: E402,F401  (registers the Quad*-v0 ids)
from agents.layers import Layout  # noqa: E402
from agents.sb3 import SwarmFeaturesExtractor  # noqa: E402
from envs.observations import obs_spec  # noqa: E402


def test_ppo_learns_and_predicts_on_quad_hover():
    env = gymnasium.make("QuadHover-v0", episode_seconds=2.0)
    assert env.observation_space.shape == (28,)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=512,
        batch_size=128,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={
            "features_extractor_class": SwarmFeaturesExtractor,
            "features_extractor_kwargs": {"encoder": "attention", "preset": "deployable"},
            "net_arch": [],
        },
    )
    assert isinstance(model.policy.features_extractor, SwarmFeaturesExtractor)
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (4,) and np.isfinite(action).all() and env.action_space.contains(action)
    env.close()


@pytest.mark.parametrize("encoder", ["mlp", "attention", "deepsets"])
@pytest.mark.parametrize("k", [0, 2])
def test_extractor_shapes(encoder: str, k: int):
    dim = Layout(num_neighbors=k).dim
    space = gymnasium.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
    inferred = SwarmFeaturesExtractor(space, encoder=encoder)
    explicit = SwarmFeaturesExtractor(space, encoder=encoder, layout=obs_spec(k), preset="large")
    for ext in (inferred, explicit):
        out = ext(torch.randn(7, dim))
        assert out.shape == (7, ext.features_dim) and torch.isfinite(out).all()


def test_extractor_rejects_bad_arguments():
    space = gymnasium.spaces.Box(-np.inf, np.inf, (28,), np.float32)
    with pytest.raises(ValueError, match="allowed: mlp, attention, deepsets"):
        SwarmFeaturesExtractor(space, encoder="cnn")
    with pytest.raises(ValueError, match="layout width 40"):
        SwarmFeaturesExtractor(space, layout=obs_spec(2))
    with pytest.raises(ValueError, match="observation width 29"):
        SwarmFeaturesExtractor(gymnasium.spaces.Box(-1, 1, (29,), np.float32))
