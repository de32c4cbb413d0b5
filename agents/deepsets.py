"""Deep-sets swarm policy: rho(pool_j phi(neighbour_j)) + self and obstacle MLPs -> head MLP.

    self (19)            -> self MLP (tanh)                          -> [E] --+
    K neighbours (K x 6) -> phi per neighbour (tanh) -> mean|sum over K -> rho (tanh) -> [E] --+-> head MLP
    obstacle SDF (9)     -> obstacle MLP (tanh)                      -> [E] --+

The set encoder of Zaheer et al. (2017), like quad-swarm-rl's mean-embedding neighbour encoder:
invariant to the order of the neighbours and cheaper than attention. Mean pooling (the default) keeps
the features' scale independent of K; sum pooling lets the policy count neighbours. With K = 0 the
neighbour branch is not built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from agents.base import ObsLayout
from agents.layers import Encoder, EncoderActorCritic, mlp, split_obs

POOLS: tuple[str, ...] = ("mean", "sum")


class DeepSetsEncoder(Encoder):
    """obs [N, D] -> head features [N, hidden_sizes[-1]]."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "deployable": {"embed_dim": 16, "embed_layers": 2, "hidden_sizes": (32,), "pool": "mean"},
        "large": {"embed_dim": 256, "embed_layers": 2, "hidden_sizes": (512,), "pool": "mean"},
    }

    def __init__(
        self,
        layout: ObsLayout,
        embed_dim: int = 16,
        embed_layers: int = 2,
        hidden_sizes: Sequence[int] = (32,),
        pool: str = "mean",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; allowed: {', '.join(POOLS)}")
        if embed_dim < 1 or embed_layers < 1:
            raise ValueError(f"embed_dim={embed_dim} and embed_layers={embed_layers} must be >= 1")
        self.layout = layout
        self.pool = pool
        widths = [embed_dim] * embed_layers
        self.self_embed = mlp(layout.self_dim, widths)
        k = layout.num_neighbors
        self.phi = mlp(layout.neighbour_dim, widths) if k > 0 else None
        self.rho = mlp(embed_dim, [embed_dim]) if k > 0 else None
        self.obstacle_embed = mlp(layout.obstacle_dim, widths) if layout.obstacle_dim > 0 else None
        parts = 1 + (k > 0) + (layout.obstacle_dim > 0)
        self.head = mlp(parts * embed_dim, hidden_sizes)
        self.out_dim = hidden_sizes[-1] if len(hidden_sizes) else parts * embed_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, D] -> features [N, out_dim]."""
        own, neighbours, sdf = split_obs(obs, self.layout)
        parts = [self.self_embed(own)]
        if self.phi is not None and self.rho is not None:
            per = self.phi(neighbours)  # [N, K, E]
            pooled = per.mean(1) if self.pool == "mean" else per.sum(1)
            parts.append(self.rho(pooled))
        if self.obstacle_embed is not None:
            parts.append(self.obstacle_embed(sdf))
        return self.head(torch.cat(parts, -1))


class DeepSetsPolicy(EncoderActorCritic):
    """Deep-sets actor-critic. Encoder overrides: embed_dim, embed_layers, hidden_sizes, pool."""

    encoder_cls = DeepSetsEncoder
