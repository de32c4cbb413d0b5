"""MLP baseline: the whole flat observation through a tanh MLP, with the shared Gaussian head and critic.

It sees the neighbours in the environment's ranking order (no permutation invariance over the K
neighbours), which is the point of the baseline: it shows what the structured encoders buy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from agents.base import ObsLayout
from agents.layers import Encoder, EncoderActorCritic, mlp


class MLPEncoder(Encoder):
    """obs [N, D] -> features [N, hidden_sizes[-1]] (the observation itself with no hidden layers)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "deployable": {"hidden_sizes": (32, 32)},
        "large": {"hidden_sizes": (256, 256)},
    }

    def __init__(self, layout: ObsLayout, hidden_sizes: Sequence[int] = (32, 32)):
        super().__init__()
        self.net = mlp(layout.dim, hidden_sizes)
        self.out_dim = hidden_sizes[-1] if len(hidden_sizes) else layout.dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, D] -> features [N, out_dim]."""
        return self.net(obs)


class MLPPolicy(EncoderActorCritic):
    """MLP actor-critic. Encoder override (None keeps the preset's value): hidden_sizes."""

    encoder_cls = MLPEncoder
