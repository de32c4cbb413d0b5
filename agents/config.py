"""Typed configuration of a learned policy: the ``agent:`` section of an experiment YAML file.

Unknown keys are rejected, and so are keys that do not apply to the chosen policy (``num_heads`` on
an ``mlp``), naming the field. Width fields left unset (None) keep the preset's value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.layers import DEFAULT_INIT_LOG_STD, DEFAULT_LOG_STD_BOUNDS

# Names accepted by agents.make_policy (agents.registry maps each to its class).
POLICIES: tuple[str, ...] = ("mlp", "attention", "deepsets", "commformer")
PRESETS: tuple[str, ...] = ("deployable", "large")

# Encoder fields each policy understands; the rest of PolicyConfig applies to every policy.
ENCODER_FIELDS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden_sizes",),
    "attention": ("embed_dim", "embed_layers", "num_heads", "head_dim", "hidden_sizes"),
    "deepsets": ("embed_dim", "embed_layers", "hidden_sizes", "pool"),
    # CommFormer's fields are not all encoder sizes (graph, gating, schedule), but they follow the same
    # rule: set on another policy they are rejected, unset they keep agents.commformer's defaults.
    "commformer": (
        "embed_dim",
        "embed_layers",
        "num_heads",
        "head_dim",
        "width",
        "num_blocks",
        "sparsity",
        "gating",
        "gate_hidden",
        "gate_penalty",
        "tau",
        "warmup_updates",
        "post_stable",
        "post_ratio",
        "communicate",
        "graph_size",
    ),
}
_ALL_ENCODER_FIELDS = sorted({f for fields in ENCODER_FIELDS.values() for f in fields})


def unknown_policy_message(name: object) -> str:
    """The error text for a policy name that is not registered (shared by the config and the registry)."""
    return f"unknown policy {name!r}; allowed: {', '.join(POLICIES)}"


class PolicyConfig(BaseModel):
    """Which policy to build and its sizes; ``agents.make_policy_from_config`` turns it into a network."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    name: str = Field("attention", description="one of agents.POLICIES")
    preset: Literal["deployable", "large"] = Field(
        "deployable", description="deployable: a few thousand actor parameters (Cortex-M4); large: the paper's"
    )
    embed_dim: int | None = Field(None, ge=1, description="width of the self/neighbour/obstacle embeddings")
    embed_layers: int | None = Field(None, ge=1, description="tanh layers per embedding MLP")
    num_heads: int | None = Field(None, ge=1, description="attention heads")
    head_dim: int | None = Field(None, ge=1, description="width per attention head (default: embed_dim)")
    hidden_sizes: tuple[int, ...] | None = Field(None, description="tanh layers of the head (mlp: the whole trunk)")
    pool: Literal["mean", "sum"] | None = Field(None, description="deep-sets pooling over neighbours")
    # CommFormer (agents.commformer): the learned communication graph, the gate and their schedule.
    width: int | None = Field(None, ge=1, description="commformer: width of the agent tokens and blocks")
    num_blocks: int | None = Field(None, ge=1, description="commformer: graph-attention blocks (rounds of messages)")
    sparsity: float | None = Field(
        None, gt=0.0, le=1.0, description="commformer: S in (0, 1]; each agent hears max(int(n S), 1) others"
    )
    gating: bool | None = Field(None, description="commformer: per-agent temporal gate on receiving messages")
    gate_hidden: int | None = Field(None, ge=1, description="commformer: hidden width of the gate network")
    gate_penalty: float | None = Field(None, ge=0.0, description="commformer: loss weight of the communication rate")
    tau: float | None = Field(None, gt=0.0, description="commformer: Gumbel-softmax / Gumbel-sigmoid temperature")
    warmup_updates: int | None = Field(None, ge=0, description="commformer: updates trained on the raw edge logits")
    post_stable: bool | None = Field(None, description="commformer: exact top-k late in training")
    post_ratio: float | None = Field(
        None, ge=0.0, le=1.0, description="commformer: fraction of the updates after which post_stable applies"
    )
    communicate: bool | None = Field(
        None, description="commformer: false = the no-communication baseline (self-loops only)"
    )
    num_actions: int | None = Field(
        None, ge=2, description="Discrete(num_actions) categorical head instead of the Gaussian (set by the trainer "
        "from a Discrete action space)"
    )
    graph_size: int | None = Field(None, ge=1, description="commformer: nodes of the graph; must equal the agents")
    close_range: float | None = Field(
        None, gt=0, description="attention / mlp / deepsets: a second actor network for the agents whose nearest "
        "observed neighbour's centre is within this many m (agents.close_range; 0.29 = 0.2 m body gap for a "
        "Crazyflie); None: one network",
    )
    close_time: float | None = Field(
        None, gt=0, description="with close_range: the near network also flies an agent that would be within "
        "close_range of an observed neighbour in this many s at their closing speed (d - close_time x closing "
        "speed < close_range); None: by distance alone",
    )
    column_range: float | None = Field(
        None, gt=0, description="with close_range: a third network flies the agents (not near a neighbour) whose "
        "obstacle SDF reads less than this at the centre (m from the centre to the nearest column's surface)",
    )
    column_time: float | None = Field(
        None, gt=0, description="with column_range: the column network also flies an agent whose SDF would read "
        "less than column_range in this many s at its closing speed on the column (sdf - column_time x closing "
        "speed < column_range); None: by distance alone",
    )
    critic: Literal["local", "central"] = Field(
        "local", description="local: value of own obs; central: own + mean over the env's agents (MAPPO)"
    )
    init_log_std: float = Field(DEFAULT_INIT_LOG_STD, description="initial log standard deviation of the actions")
    log_std_bounds: tuple[float, float] = Field(DEFAULT_LOG_STD_BOUNDS, description="clamp range of the log-std")

    @field_validator("name")
    @classmethod
    def _known_name(cls, v: str) -> str:
        if v not in POLICIES:
            raise ValueError(unknown_policy_message(v))
        return v

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_sizes(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and any(size < 1 for size in v):
            raise ValueError(f"hidden sizes must be >= 1 (got {list(v)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PolicyConfig:
        allowed = ENCODER_FIELDS[self.name]
        for field in _ALL_ENCODER_FIELDS:
            if getattr(self, field) is not None and field not in allowed:
                raise ValueError(
                    f"{field} does not apply to policy {self.name!r} (its encoder fields: {', '.join(allowed)})"
                )
        if self.column_range is not None and self.close_range is None:
            raise ValueError("column_range adds a network beside the close-range one: set close_range too")
        if self.close_time is not None and self.close_range is None:
            raise ValueError("close_time widens the close-range network's gate: set close_range too")
        if self.column_time is not None and self.column_range is None:
            raise ValueError("column_time widens the column network's gate: set column_range too")
        if self.close_range is not None and (self.name == "commformer" or self.num_actions is not None):
            raise ValueError(f"close_range applies to a Gaussian attention / mlp / deepsets actor, not "
                             f"{'a categorical one' if self.num_actions is not None else self.name!r}")
        lo, hi = self.log_std_bounds
        if not lo < hi:
            raise ValueError(f"log_std_bounds={list(self.log_std_bounds)} must be increasing")
        if not lo <= self.init_log_std <= hi:
            raise ValueError(f"init_log_std={self.init_log_std} must lie within log_std_bounds={list((lo, hi))}")
        return self

    def encoder_kwargs(self) -> dict[str, object]:
        """The encoder overrides that are set (unset ones keep the preset's values)."""
        return {f: getattr(self, f) for f in ENCODER_FIELDS[self.name] if getattr(self, f) is not None}
