"""Stable-Baselines3 glue: our self/neighbour/obstacle encoders as an SB3 features extractor.

    from agents.sb3 import SwarmFeaturesExtractor
    model = PPO("MlpPolicy", gymnasium.make("QuadHover-v0"), policy_kwargs={
        "features_extractor_class": SwarmFeaturesExtractor, "net_arch": [],
        "features_extractor_kwargs": {"encoder": "attention", "preset": "deployable"}})

For the single-drone Gymnasium envs; for training speed give SB3 the batched twin instead,
``envs.sb3_vec_env.make_sb3_vec_env("QuadHover-v0", num_envs=128)`` (all envs in one tensor step;
``BATCHED_PPO_KWARGS`` below; scripts/sb3_hover.py). SB3 owns the Gaussian head and the critic; only
the encoder is shared with ``agents.make_policy``. Imported on demand, so the rest of agents/ does not need SB3.

Design note (the full example, what SB3 re-initialises): docs/design/policy_blocks.md.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.base import ObsLayout
from agents.layers import check_layout, layout_from_dim
from agents.registry import ENCODERS

# SB3 PPO settings for many environments in one tensor step (envs.sb3_vec_env.QuadSB3VecEnv): short
# rollouts per env, large minibatches, a few epochs at a larger step size. With 128 two-second
# QuadHover-v0 episodes they beat a random policy's return within ~60 k steps (tests/test_sb3.py),
# where SB3's defaults on one Gymnasium env needed ~500 k.
BATCHED_PPO_KWARGS: dict[str, Any] = {"n_steps": 32, "batch_size": 1024, "n_epochs": 5, "learning_rate": 1e-3}


class SwarmFeaturesExtractor(BaseFeaturesExtractor):
    """Flat observation [N, D] -> encoder features [N, F] for SB3 policies.

    ``encoder``: one of ``agents.POLICIES``; ``preset`` and ``overrides`` as for ``agents.make_policy``.
    ``layout``: the env's ``obs_spec``; by default the quad-swarm-rl layout is inferred from D.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        encoder: str = "attention",
        preset: str = "deployable",
        layout: ObsLayout | None = None,
        **overrides: Any,
    ):
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; allowed: {', '.join(ENCODERS)}")
        shape = observation_space.shape
        if shape is None or len(shape) != 1:
            raise ValueError(f"SwarmFeaturesExtractor needs a flat Box observation space, got shape {shape}")
        layout = layout if layout is not None else layout_from_dim(int(shape[0]))
        check_layout(layout)
        if layout.dim != shape[0]:
            raise ValueError(f"layout width {layout.dim} != observation width {shape[0]}")
        net = ENCODERS[encoder].from_preset(layout, preset, **overrides)
        super().__init__(observation_space, features_dim=net.out_dim)
        self.encoder = net

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """observations [N, D] -> features [N, F]."""
        return self.encoder(observations)
