"""The attention swarm policy of quad-swarm-rl (Huang et al., ICRA 2024), per agent.

    self (19) -> self MLP -> e_self;   K neighbours (K x 6) -> neighbour MLP -> K tokens [K, E]
    obstacle SDF (9) -> obstacle MLP -> 1 token;   query e_self attends over the K + 1 tokens
    -> residual (+ e_self) -> LayerNorm -> ctx;   [e_self, ctx] -> head MLP -> linear -> 4 action means

Presets: ``deployable`` (width 16, 1 head, head 32: ~3.7 k actor parameters, ~15 KB of float32 for the
Cortex-M4 of a Crazyflie) and ``large`` (the training network of the paper: width 256, 4 heads, head 512).

Design note (why the query is the agent's own embedding, one token per neighbour, full-width heads):
docs/design/swarm_attention.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from agents.base import ObsLayout
from agents.layers import Encoder, EncoderActorCritic, MultiHeadAttention, mlp, split_obs


class SwarmAttentionEncoder(Encoder):
    """obs [N, D] -> head features [N, hidden_sizes[-1]] (or [N, 2E] with no head layers)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "deployable": {"embed_dim": 16, "embed_layers": 2, "num_heads": 1, "head_dim": None, "hidden_sizes": (32,)},
        "large": {"embed_dim": 256, "embed_layers": 2, "num_heads": 4, "head_dim": None, "hidden_sizes": (512,)},
    }

    def __init__(
        self,
        layout: ObsLayout,
        embed_dim: int = 16,
        embed_layers: int = 2,
        num_heads: int = 1,
        head_dim: int | None = None,
        hidden_sizes: Sequence[int] = (32,),
    ):
        super().__init__()
        if embed_dim < 1 or embed_layers < 1:
            raise ValueError(f"embed_dim={embed_dim} and embed_layers={embed_layers} must be >= 1")
        self.layout = layout
        widths = [embed_dim] * embed_layers
        self.self_embed = mlp(layout.self_dim, widths)
        self.neighbour_embed = mlp(layout.neighbour_dim, widths) if layout.num_neighbors > 0 else None
        self.obstacle_embed = mlp(layout.obstacle_dim, widths) if layout.obstacle_dim > 0 else None
        has_tokens = self.neighbour_embed is not None or self.obstacle_embed is not None
        # Full-width heads by default (the original's d_k = d_model), see the module docstring.
        self.attention = MultiHeadAttention(embed_dim, num_heads, head_dim or embed_dim) if has_tokens else None
        self.norm = nn.LayerNorm(embed_dim)
        self.head = mlp(2 * embed_dim, hidden_sizes)
        self.out_dim = hidden_sizes[-1] if len(hidden_sizes) else 2 * embed_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [N, D] -> features [N, out_dim]."""
        own, neighbours, sdf = split_obs(obs, self.layout)
        e_self = self.self_embed(own)  # [N, E]
        tokens = []
        if self.neighbour_embed is not None:
            tokens.append(self.neighbour_embed(neighbours))  # [N, K, E]
        if self.obstacle_embed is not None:
            tokens.append(self.obstacle_embed(sdf).unsqueeze(1))  # [N, 1, E]
        if self.attention is not None:
            attended = self.attention(e_self.unsqueeze(1), torch.cat(tokens, 1)).squeeze(1)  # [N, E]
            ctx = self.norm(e_self + attended)
        else:
            ctx = self.norm(e_self)
        return self.head(torch.cat([e_self, ctx], -1))


class SwarmAttentionPolicy(EncoderActorCritic):
    """Attention actor-critic: ``SwarmAttentionPolicy(layout, num_agents, preset="large", critic="central")``.

    Encoder overrides (None keeps the preset's value): embed_dim, embed_layers, num_heads, head_dim,
    hidden_sizes.
    """

    encoder_cls = SwarmAttentionEncoder
