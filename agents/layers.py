"""Building blocks shared by the learned swarm policies: observation splitting, MLPs, attention, heads.

Everything here is hand-written on plain ``nn.Linear`` / ``nn.LayerNorm`` so that deploy/ can walk
the modules layer by layer (compression, C export for the Cortex-M4) without special cases.
``MultiHeadAttention`` takes the head width as its own argument (quad-swarm-rl gives every head the
full model width); ``EncoderActorCritic`` is the common shape of every policy: an encoder feeding a
Gaussian (or categorical) action head, and a separate critic, local or central (MAPPO).

Design note (why not torch's MultiheadAttention, the actor-critic shape): docs/design/policy_blocks.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from agents.base import ActorCritic
from quadspec import ACT_DIM, ObsLayout
from quadspec import layout_from_dim as layout_from_dim  # re-exported: the observation contract lives in quadspec

# The contract's layout record under the name this module always gave it: Layout(num_neighbors=2) is
# 19 + 2 x 6 + 9 wide.
Layout = ObsLayout

HIDDEN_GAIN = math.sqrt(2.0)  # orthogonal-init gain of hidden layers (the usual PPO choice)
ACTION_GAIN = 0.01  # tiny action-mean weights: initial actions ~0, i.e. thrust ~ hover
VALUE_GAIN = 1.0
DEFAULT_INIT_LOG_STD = math.log(0.4)
DEFAULT_LOG_STD_BOUNDS = (-5.0, 0.5)  # std in [0.0067, 1.65]: never collapses to 0 nor dwarfs [-1, 1]

CriticKind = Literal["local", "central"]
CRITICS: tuple[str, ...] = ("local", "central")


def check_layout(layout: ObsLayout) -> None:
    """Reject layouts the encoders cannot split (negative or missing segments)."""
    if layout.self_dim < 1:
        raise ValueError(f"layout.self_dim={layout.self_dim} must be >= 1")
    if layout.num_neighbors < 0 or layout.obstacle_dim < 0:
        raise ValueError(f"layout.num_neighbors and layout.obstacle_dim must be >= 0 (got {layout})")
    if layout.num_neighbors > 0 and layout.neighbour_dim < 1:
        raise ValueError(f"layout.neighbour_dim={layout.neighbour_dim} must be >= 1 when num_neighbors > 0")


def split_obs(obs: torch.Tensor, layout: ObsLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """obs [N, D] -> self [N, S], neighbours [N, K, 6], obstacle SDF [N, O] (views where possible)."""
    s, k, nd = layout.self_dim, layout.num_neighbors, layout.neighbour_dim
    end = s + k * nd
    return obs[:, :s], obs[:, s:end].reshape(obs.shape[0], k, nd), obs[:, end:]


def init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias; returns the layer."""
    nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, sizes: Sequence[int], gain: float = HIDDEN_GAIN) -> nn.Sequential:
    """Linear + tanh per entry of ``sizes`` (an empty ``sizes`` is the identity)."""
    layers: list[nn.Module] = []
    for size in sizes:
        layers += [init_linear(nn.Linear(in_dim, size), gain), nn.Tanh()]
        in_dim = size
    return nn.Sequential(*layers)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``num_heads`` heads of ``head_dim`` each (see module docstring).

    query [N, Lq, E], tokens [N, T, E] -> [N, Lq, E]. Projections are separate ``nn.Linear`` layers
    (q, k, v: E -> H * head_dim; out: H * head_dim -> E), Xavier-initialised like torch's module.
    """

    def __init__(self, embed_dim: int, num_heads: int = 1, head_dim: int | None = None):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads={num_heads} must be >= 1")
        self.num_heads = num_heads
        self.head_dim = head_dim if head_dim is not None else embed_dim // num_heads
        if self.head_dim < 1:
            raise ValueError(f"head_dim={self.head_dim} must be >= 1")
        inner = num_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attend from ``query`` [N, Lq, E] over ``tokens`` [N, T, E]; returns [N, Lq, E]."""
        n, lq, _ = query.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_proj(query).view(n, lq, h, hd).transpose(1, 2)  # [N, H, Lq, hd]
        k = self.k_proj(tokens).view(n, -1, h, hd).transpose(1, 2)  # [N, H, T, hd]
        v = self.v_proj(tokens).view(n, -1, h, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [N, H, Lq, hd]
        return self.out_proj(out.transpose(1, 2).reshape(n, lq, h * hd))


class Encoder(nn.Module):
    """obs [N, D] -> features [N, out_dim]. Subclasses set ``out_dim`` and ``PRESETS``."""

    out_dim: int
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_preset(cls, layout: ObsLayout, preset: str = "deployable", **overrides: Any) -> Encoder:
        """Build from a named preset; keyword overrides that are not None replace the preset's values."""
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown preset {preset!r} for {cls.__name__}; allowed: {', '.join(cls.PRESETS)}")
        kwargs = {**cls.PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(layout, **kwargs)


class GaussianActor(nn.Module):
    """Encoder + linear action mean + state-independent log-std. ``forward`` is the deterministic policy."""

    def __init__(
        self, encoder: Encoder, init_log_std: float, log_std_bounds: tuple[float, float], act_dim: int = ACT_DIM
    ):
        super().__init__()
        lo, hi = log_std_bounds
        if not lo < hi:
            raise ValueError(f"log_std_bounds={log_std_bounds} must be increasing")
        if not lo <= init_log_std <= hi:
            raise ValueError(f"init_log_std={init_log_std} must lie within log_std_bounds={log_std_bounds}")
        self.encoder = encoder
        self.mean = init_linear(nn.Linear(encoder.out_dim, act_dim), ACTION_GAIN)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        self.log_std_bounds = (float(lo), float(hi))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> action mean [..., act_dim]."""
        flat = obs.reshape(-1, obs.shape[-1])
        return self.mean(self.encoder(flat)).view(*obs.shape[:-1], self.mean.out_features)

    def std(self) -> torch.Tensor:
        """Clamped standard deviation [act_dim]. Clamping (not a soft squash) keeps log_std readable in logs."""
        return self.log_std.clamp(*self.log_std_bounds).exp()


class CategoricalActor(nn.Module):
    """Encoder + linear logits over ``num_actions`` discrete actions."""

    def __init__(self, encoder: Encoder, num_actions: int):
        super().__init__()
        if num_actions < 2:
            raise ValueError(f"num_actions={num_actions} must be >= 2")
        self.encoder = encoder
        self.mean = init_linear(nn.Linear(encoder.out_dim, num_actions), ACTION_GAIN)  # "mean": the logits

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> logits [..., A]."""
        flat = obs.reshape(-1, obs.shape[-1])
        return self.mean(self.encoder(flat)).view(*obs.shape[:-1], self.mean.out_features)


class Critic(nn.Module):
    """A separate value network: local (own features) or central (own features + mean over the row's agents)."""

    def __init__(self, encoder: Encoder, kind: str = "local"):
        super().__init__()
        if kind not in CRITICS:
            raise ValueError(f"unknown critic {kind!r}; allowed: {', '.join(CRITICS)}")
        self.kind = kind
        self.encoder = encoder
        f = encoder.out_dim
        if kind == "local":
            self.head: nn.Module = init_linear(nn.Linear(f, 1), VALUE_GAIN)
        else:
            # A hidden layer lets the value mix own and pooled features non-linearly.
            self.head = nn.Sequential(mlp(2 * f, [f]), init_linear(nn.Linear(f, 1), VALUE_GAIN))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, M, D] -> value [B, M]."""
        b, m, d = obs.shape
        feat = self.encoder(obs.reshape(b * m, d)).view(b, m, -1)  # [B, M, F]
        if self.kind == "central":
            # Mean over the agents of the row: invariant to their order, defined for any M.
            feat = torch.cat([feat, feat.mean(1, keepdim=True).expand_as(feat)], -1)  # [B, M, 2F]
        return self.head(feat).squeeze(-1)


class EncoderActorCritic(ActorCritic):
    """An actor (Gaussian over ``act_dim`` commands, or categorical with ``num_actions``) and a separate
    critic, each with its own copy of ``encoder_cls``'s architecture.

    ``preset`` and the keyword ``overrides`` (None = keep the preset's value) configure the encoder.
    ``num_agents`` is recorded for checkpoints; the networks themselves work for any M.
    """

    encoder_cls: ClassVar[type[Encoder]]
    config: Any = None  # the agents.config.PolicyConfig it was built from (set by make_policy_from_config)

    def __init__(
        self,
        layout: ObsLayout,
        num_agents: int = 1,
        *,
        preset: str = "deployable",
        critic: str = "local",
        init_log_std: float = DEFAULT_INIT_LOG_STD,
        log_std_bounds: tuple[float, float] = DEFAULT_LOG_STD_BOUNDS,
        act_dim: int = ACT_DIM,
        num_actions: int | None = None,
        **overrides: Any,
    ):
        super().__init__()
        check_layout(layout)
        if num_agents < 1:
            raise ValueError(f"num_agents={num_agents} must be >= 1")
        self.layout = layout
        self.num_agents = num_agents
        self.obs_dim = layout.dim
        self.num_actions = num_actions
        self.act_dim = act_dim if num_actions is None else 1
        encoder = self.encoder_cls.from_preset(layout, preset, **overrides)
        self.actor: GaussianActor | CategoricalActor = (
            GaussianActor(encoder, init_log_std, tuple(log_std_bounds), act_dim)
            if num_actions is None
            else CategoricalActor(encoder, num_actions)
        )
        self.critic = Critic(self.encoder_cls.from_preset(layout, preset, **overrides), critic)
