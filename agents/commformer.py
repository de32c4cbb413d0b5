"""CommFormer: a learned, sparse communication graph over the agents, with optional temporal gating.

After "Learning Multi-Agent Communication from Graph Modeling Perspective" (ICLR 2024) and its
temporal-gating extension. Each agent's token (the agents.swarm_attention encoder) attends only to its
in-neighbours in a learned graph: edge logits [n, n], k = max(int(n S), 1) in-edges per agent plus a
self-loop, Gumbel top-k with a straight-through estimator in training, exact top-k when acting. An
optional per-agent gate decides from the agent's own observation whether it receives messages at a
step. Execution is decentralised: agent i's action depends only on its own observation and its
in-neighbours' messages. ``communicate=False`` is the no-communication baseline; ``edge_parameters()``
and ``policy_parameters()`` split the parameters for the bi-level schedule.

Design note (the graph, how it enters attention, gating, deviations from the reference):
docs/design/commformer.md.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from agents.base import ActorCritic, ObsLayout
from agents.layers import (
    ACT_DIM,
    ACTION_GAIN,
    DEFAULT_INIT_LOG_STD,
    DEFAULT_LOG_STD_BOUNDS,
    HIDDEN_GAIN,
    Critic,
    check_layout,
    init_linear,
    mlp,
)
from agents.swarm_attention import SwarmAttentionEncoder

GATE_INIT_LOGIT = 2.0  # gates start open with p = sigmoid(2) ~ 0.88


def in_degree(num_agents: int, sparsity: float) -> int:
    """Messages each agent receives from others: max(int(n S), 1), at most n - 1 (0 for a lone agent)."""
    check_sparsity(sparsity)
    return min(max(int(num_agents * sparsity), 1), num_agents - 1)


def check_sparsity(sparsity: float) -> None:
    """Reject a sparsity outside (0, 1]."""
    if not 0.0 < sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity} must lie in (0, 1] (the fraction of agents each agent hears)")


def _off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


class CommGraph(nn.Module):
    """Learned edge logits [n, n] (row i: who sends to i) and the graphs sampled from them."""

    def __init__(
        self,
        num_agents: int,
        sparsity: float = 0.4,
        tau: float = 1.0,
        warmup_updates: int = 10,
        post_stable: bool = False,
        post_ratio: float = 0.5,
    ):
        super().__init__()
        if num_agents < 1:
            raise ValueError(f"num_agents={num_agents} must be >= 1")
        if tau <= 0:
            raise ValueError(f"tau={tau} must be > 0")
        self.num_agents = num_agents
        self.k = in_degree(num_agents, sparsity)
        self.sparsity = float(sparsity)
        self.tau = float(tau)
        self.warmup_updates = int(warmup_updates)
        self.post_stable = bool(post_stable)
        self.post_ratio = float(post_ratio)
        self.edge_logits = nn.Parameter(torch.ones(num_agents, num_agents))
        self.update = 0  # set by the trainer through CommFormerPolicy.set_training_progress
        self.total_updates = 0
        self.acting = False

    def mode(self) -> str:
        """Which graph a forward pass uses now: "exact", "raw" or "gumbel" (see the module docstring)."""
        if self.acting or not self.training:
            return "exact"
        if self.update < self.warmup_updates:
            return "raw"
        if self.post_stable and self.total_updates > 0 and self.update >= self.post_ratio * self.total_updates:
            return "exact"
        return "gumbel"

    def forward(self, mode: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(edge weights [n, n], connected [n, n] bool); the diagonal is 0 / False (self-loops are added later)."""
        mode = mode or self.mode()
        n, logits = self.num_agents, self.edge_logits
        off = _off_diagonal(n, logits.device)
        if self.k == 0:  # a lone agent: nothing to receive
            return logits * 0.0, torch.zeros_like(off)
        if mode == "raw":
            return logits * off, off.clone()
        masked = logits.masked_fill(~off, float("-inf"))
        if mode == "gumbel":
            gumbels = -torch.empty_like(logits).exponential_().log()
            scores = (masked + gumbels) / self.tau
        elif mode == "exact":
            scores = masked
        else:
            raise ValueError(f"unknown graph mode {mode!r}; allowed: exact, raw, gumbel")
        soft = scores.softmax(-1)  # the diagonal gets exactly 0
        index = scores.topk(self.k, dim=-1).indices
        hard = torch.zeros_like(logits).scatter_(-1, index, 1.0)
        return hard - soft.detach() + soft, hard.bool()

    @torch.no_grad()
    def adjacency(self) -> torch.Tensor:
        """The acting graph as a 0/1 matrix [n, n] with the self-loops (for heatmaps and reports)."""
        _, connected = self("exact")
        return (connected | ~_off_diagonal(self.num_agents, connected.device)).float()


class Gate(nn.Module):
    """Own observation [N, D] -> logit of receiving messages [N] (shared weights over agents)."""

    def __init__(self, obs_dim: int, hidden: int, tau: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(mlp(obs_dim, [hidden]), init_linear(nn.Linear(hidden, 1), 0.01))
        nn.init.constant_(self.net[-1].bias, GATE_INIT_LOGIT)
        self.tau = float(tau)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., D] -> gate logits [...]."""
        return self.net(obs).squeeze(-1)

    def forward(self, obs: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate value [...] in {0, 1} numerically, open [...] bool); straight-through when ``sample``."""
        logit = self.logits(obs)
        if not sample:
            is_open = logit > 0
            return is_open.float(), is_open
        u = torch.rand_like(logit).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logit + u.log() - (-u).log1p()) / self.tau)
        is_open = soft > 0.5
        return is_open.float() - soft.detach() + soft, is_open


class RelationAttention(nn.Module):
    """Multi-head attention over agents restricted to a graph, with a relation embedding per pair.

    x [B, M, W], weights [B, M, M] (receiver i, sender j; diagonal 1), connected [B, M, M] bool -> [B, M, W].
    """

    def __init__(self, width: int, num_heads: int = 1, head_dim: int | None = None):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads={num_heads} must be >= 1")
        self.num_heads = num_heads
        self.head_dim = head_dim or max(width // num_heads, 1)
        inner = num_heads * self.head_dim
        self.q_proj = nn.Linear(width, inner)
        self.k_proj = nn.Linear(width, inner)
        self.v_proj = nn.Linear(width, inner)
        self.out_proj = nn.Linear(inner, width)
        # Pair features (edge value, is self-loop) -> additive terms for the query and the key.
        self.relation = nn.Linear(2, 2 * inner)
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.relation):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, connected: torch.Tensor) -> torch.Tensor:
        b, m, _ = x.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_proj(x).view(b, m, 1, h, hd)  # receiver i
        k = self.k_proj(x).view(b, 1, m, h, hd)  # sender j
        v = self.v_proj(x).view(b, m, h, hd)
        eye = torch.eye(m, device=x.device, dtype=x.dtype).expand(b, m, m)
        pair = torch.stack([weights * (1 - eye), eye], -1)  # [B, M, M, 2]
        ra, rb = self.relation(pair).view(b, m, m, 2, h, hd).unbind(3)  # [B, M, M, H, hd] each
        scores = ((q + ra) * (k + rb)).sum(-1) / math.sqrt(hd)  # [B, M, M, H]
        scores = scores.masked_fill(~connected.unsqueeze(-1), float("-inf"))
        attn = scores.softmax(2) * weights.unsqueeze(-1)  # non-edges: exactly 0
        out = torch.einsum("bijh,bjhd->bihd", attn, v).reshape(b, m, h * hd)
        return self.out_proj(out)


class GraphBlock(nn.Module):
    """Post-norm transformer block over agents: relation attention and a per-agent FFN."""

    def __init__(self, width: int, num_heads: int, head_dim: int | None):
        super().__init__()
        self.attention = RelationAttention(width, num_heads, head_dim)
        self.norm1 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(mlp(width, [width]), init_linear(nn.Linear(width, width), HIDDEN_GAIN))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, connected: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, weights, connected))
        return self.norm2(x + self.ffn(x))


class CommFormerActor(nn.Module):
    """obs [B, M, D] -> action means [B, M, 4] (or logits [B, M, A] with ``num_actions``)."""

    def __init__(
        self,
        layout: ObsLayout,
        num_agents: int,
        *,
        width: int,
        embed_dim: int,
        embed_layers: int,
        num_heads: int,
        head_dim: int | None,
        num_blocks: int,
        sparsity: float,
        gating: bool,
        gate_hidden: int,
        tau: float,
        warmup_updates: int,
        post_stable: bool,
        post_ratio: float,
        num_actions: int | None,
        communicate: bool,
        init_log_std: float,
        log_std_bounds: tuple[float, float],
        act_dim: int = ACT_DIM,
    ):
        super().__init__()
        if width < 1 or num_blocks < 1:
            raise ValueError(f"width={width} and num_blocks={num_blocks} must be >= 1")
        if num_actions is not None and num_actions < 2:
            raise ValueError(f"num_actions={num_actions} must be >= 2 (or None for the Gaussian head)")
        lo, hi = log_std_bounds
        if not lo < hi or not lo <= init_log_std <= hi:
            raise ValueError(f"init_log_std={init_log_std} must lie within increasing log_std_bounds={log_std_bounds}")
        self.num_agents = num_agents
        self.num_actions = num_actions
        self.communicate = communicate
        self.encoder = SwarmAttentionEncoder(
            layout, embed_dim=embed_dim, embed_layers=embed_layers, num_heads=1, hidden_sizes=(width,)
        )
        self.graph = CommGraph(num_agents, sparsity, tau, warmup_updates, post_stable, post_ratio)
        self.gate = Gate(layout.dim, gate_hidden, tau) if gating else None
        self.blocks = nn.ModuleList(GraphBlock(width, num_heads, head_dim) for _ in range(num_blocks))
        out = act_dim if num_actions is None else num_actions
        self.mean = init_linear(nn.Linear(width, out), ACTION_GAIN)
        if num_actions is None:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
        self.log_std_bounds = (float(lo), float(hi))

    def std(self) -> torch.Tensor:
        """Clamped standard deviation [4] of the Gaussian head."""
        if self.num_actions is not None:
            raise ValueError("a categorical CommFormer head has no standard deviation")
        return self.log_std.clamp(*self.log_std_bounds).exp()

    def masks(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, M, D] -> (edge weights [B, M, M] with diagonal 1, connected [B, M, M] bool)."""
        b, m, _ = obs.shape
        if m != self.num_agents:
            raise ValueError(
                f"the communication graph has {self.num_agents} agents but the observations have {m}; "
                "a CommFormer policy only runs with the agent count it was built for"
            )
        eye = torch.eye(m, device=obs.device, dtype=torch.bool)
        if not self.communicate:  # the no-communication baseline: every agent attends to itself only
            return eye.to(obs.dtype).expand(b, m, m), eye.expand(b, m, m)
        weights, connected = self.graph()
        weights, connected = weights.expand(b, m, m), connected.expand(b, m, m)
        if self.gate is not None:
            g, is_open = self.gate(obs, sample=self.training and not self.graph.acting)  # [B, M]
            weights = weights * g.unsqueeze(-1)
            connected = connected & is_open.unsqueeze(-1)
        return weights + eye, connected | eye

    def _run_blocks(self, x: torch.Tensor, weights: torch.Tensor, connected: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, weights, connected)
        return self.mean(x)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b, m, d = obs.shape
        x = self.encoder(obs.reshape(b * m, d)).view(b, m, -1)  # [B, M, W]
        sampling = self.gate is not None and self.training and not self.graph.acting
        if sampling and self.communicate and len(self.blocks) == 1:
            # Straight-through gate as a mixture of "receives" and "alone": the forward value is one of
            # the two exactly, and the gate's gradient (y_comm - y_self) . dL/dy stays alive when it is
            # closed, so a gate that closed early can reopen once messages pay (masking the attention
            # instead gives a closed gate no gradient at all: it never reopens).
            weights, connected = self.graph()
            eye = torch.eye(m, device=obs.device, dtype=torch.bool)
            y_comm = self._run_blocks(x, (weights + eye).expand(b, m, m), (connected | eye).expand(b, m, m))
            y_self = self._run_blocks(x, eye.to(x.dtype).expand(b, m, m), eye.expand(b, m, m))
            g = self.gate(obs, sample=True)[0].unsqueeze(-1)  # [B, M, 1] in {0, 1}, straight-through
            return g * y_comm + (1 - g) * y_self
        weights, connected = self.masks(obs)
        return self._run_blocks(x, weights, connected)


class CommFormerPolicy(ActorCritic):
    """CommFormer actor-critic: ``CommFormerPolicy(layout, num_agents, sparsity=0.4, gating=True)``.

    Overrides (None keeps the preset's value): width, embed_dim, embed_layers, num_heads, head_dim,
    num_blocks, sparsity, gating, gate_hidden, gate_penalty, tau, warmup_updates, post_stable,
    post_ratio, communicate (False: the no-communication baseline, every agent attends to itself
    only), graph_size (if given, must equal num_agents). ``num_actions`` (None: Gaussian over
    ``act_dim`` commands; A: Categorical over A actions) and ``act_dim`` are the action space's.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "deployable": {"width": 16, "embed_dim": 16, "embed_layers": 1, "num_heads": 1, "num_blocks": 1},
        "large": {"width": 64, "embed_dim": 64, "embed_layers": 2, "num_heads": 1, "num_blocks": 1},
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "head_dim": None,
        "sparsity": 0.4,
        "gating": False,
        "gate_hidden": 16,
        "gate_penalty": 0.01,
        "tau": 1.0,
        "warmup_updates": 10,
        "post_stable": False,
        "post_ratio": 0.5,
        "communicate": True,
        "graph_size": None,
    }
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
        if preset not in self.PRESETS:
            raise ValueError(f"unknown preset {preset!r} for CommFormer; allowed: {', '.join(self.PRESETS)}")
        unknown = set(overrides) - set(self.PRESETS[preset]) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"unknown CommFormer options: {', '.join(sorted(unknown))}")
        kw = {**self.DEFAULTS, **self.PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        graph_size = kw.pop("graph_size")
        if graph_size is not None and graph_size != num_agents:
            raise ValueError(
                f"graph_size={graph_size} does not match the number of agents ({num_agents}); "
                "the communication graph has one node per agent"
            )
        check_sparsity(kw["sparsity"])
        self.gate_penalty_coef = float(kw.pop("gate_penalty"))
        self.layout = layout
        self.num_agents = num_agents
        self.obs_dim = layout.dim
        self.num_actions = num_actions
        self.act_dim = act_dim if num_actions is None else 1
        self.actor = CommFormerActor(
            layout, num_agents, init_log_std=init_log_std, log_std_bounds=tuple(log_std_bounds),
            num_actions=num_actions, act_dim=act_dim, **kw
        )
        critic_encoder = SwarmAttentionEncoder(
            layout, embed_dim=kw["embed_dim"], embed_layers=kw["embed_layers"], hidden_sizes=(kw["width"],)
        )
        self.critic = Critic(critic_encoder, critic)

    # --- the ActorCritic interface -------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Acting uses the exact top-k graph and hard gates: (action, log_prob [B, M], value [B, M]).

        Actions are [B, M, act_dim] for the Gaussian head and [B, M] (int64) for the categorical one.
        """
        with self.acting():
            dist, value = self(obs)
        action = self.sample(dist, deterministic)
        return action, self.log_prob(dist, action), value

    # --- CommFormer specifics -----------------------------------------------------------------
    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        """Within this context forward passes use the exact graph and hard gates (as at deployment)."""
        previous = self.actor.graph.acting
        self.actor.graph.acting = True
        try:
            yield
        finally:
            self.actor.graph.acting = previous

    def set_training_progress(self, update: int, total_updates: int) -> None:
        """Tell the graph where training stands (warm-up and post-stable switches count PPO updates)."""
        if update < 0 or total_updates < 0:
            raise ValueError(f"update={update} and total_updates={total_updates} must be >= 0")
        self.actor.graph.update = int(update)
        self.actor.graph.total_updates = int(total_updates)

    def edge_parameters(self) -> list[nn.Parameter]:
        """The edge logits (the outer level of the bi-level optimisation)."""
        return [self.actor.graph.edge_logits]

    def policy_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the edge logits."""
        edge = self.actor.graph.edge_logits
        return [p for p in self.parameters() if p is not edge]

    def adjacency(self) -> torch.Tensor:
        """The acting graph [n, n] (row i: whom agent i hears), self-loops included."""
        return self.actor.graph.adjacency()

    def gate_penalty(self, obs: torch.Tensor) -> torch.Tensor:
        """Differentiable penalty on the expected communication rate: coef x mean gate probability.

        Stateless (recomputed from ``obs`` [B, M, D], the gate only sees each agent's own observation);
        0 without gating. Add it to the PPO loss.
        """
        if self.actor.gate is None:
            return obs.new_zeros(())
        return self.gate_penalty_coef * torch.sigmoid(self.actor.gate.logits(obs)).mean()

    @torch.no_grad()
    def communication_stats(self, obs: torch.Tensor) -> dict[str, float]:
        """At acting time, over the batch ``obs`` [B, M, D]:

        - ``communication_rate``: messages received / messages of full communication (B M (M - 1));
        - ``gate_open_rate``: fraction of agents whose gate is open (1 without gating);
        - ``graph_density``: in-edges per agent / (M - 1), i.e. the rate with all gates open.
        """
        b, m, _ = obs.shape
        if not self.actor.communicate:
            return {"communication_rate": 0.0, "gate_open_rate": 0.0, "graph_density": 0.0}
        with self.acting():
            _, connected = self.actor.masks(obs)
        possible = b * m * (m - 1)
        received = float(connected.sum() - b * m)  # minus the self-loops
        k = self.actor.graph.k
        return {
            "communication_rate": received / possible if possible else 0.0,
            "gate_open_rate": float(self.gate_open(obs).float().mean()),
            "graph_density": k / (m - 1) if m > 1 else 0.0,
        }

    @torch.no_grad()
    def gate_open(self, obs: torch.Tensor) -> torch.Tensor:
        """Whether each agent receives messages at acting time: [B, M] bool (all True without gating,
        all False for the no-communication baseline)."""
        b, m, _ = obs.shape
        if not self.actor.communicate:
            return torch.zeros(b, m, dtype=torch.bool, device=obs.device)
        if self.actor.gate is None:
            return torch.ones(b, m, dtype=torch.bool, device=obs.device)
        return self.actor.gate.logits(obs) > 0

    def communication_rate(self, obs: torch.Tensor) -> float:
        """Fraction of all possible messages actually received at acting time (see communication_stats)."""
        return self.communication_stats(obs)["communication_rate"]


__all__ = ["CommFormerPolicy", "CommGraph", "in_degree"]
