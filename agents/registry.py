"""Policy names -> networks: the one entry point the trainer uses (``make_policy``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from agents.base import ActorCritic, ObsLayout
from agents.close_range import CloseRangeActor
from agents.commformer import CommFormerPolicy
from agents.config import POLICIES, PolicyConfig, unknown_policy_message
from agents.deepsets import DeepSetsPolicy
from agents.layers import ACT_DIM, Encoder, EncoderActorCritic
from agents.mlp import MLPPolicy
from agents.swarm_attention import SwarmAttentionPolicy

_POLICY_CLASSES: dict[str, type[EncoderActorCritic] | type[CommFormerPolicy]] = {
    "mlp": MLPPolicy,
    "attention": SwarmAttentionPolicy,
    "deepsets": DeepSetsPolicy,
    "commformer": CommFormerPolicy,
}
# The per-agent encoders alone (obs [N, D] -> features), for wrappers such as the SB3 features
# extractor. CommFormer has none: its network mixes the agents of a row through the graph.
ENCODERS: dict[str, type[Encoder]] = {
    name: cls.encoder_cls for name, cls in _POLICY_CLASSES.items() if issubclass(cls, EncoderActorCritic)
}
assert tuple(_POLICY_CLASSES) == POLICIES, "agents.config.POLICIES and the registry disagree"


def make_policy(name: str, layout: ObsLayout, num_agents: int, **kwargs: Any) -> ActorCritic:
    """Build policy ``name`` for observations of ``layout``; ``kwargs`` are ``PolicyConfig`` fields.

    ``make_policy("attention", env.spec, 8, preset="large", critic="central")``. Unknown names raise
    ValueError listing the allowed ones; bad or inapplicable keywords raise pydantic's ValidationError.
    """
    if name not in POLICIES:
        raise ValueError(unknown_policy_message(name))
    return make_policy_from_config(PolicyConfig(name=name, **kwargs), layout, num_agents)


def make_policy_from_config(
    cfg: PolicyConfig, layout: ObsLayout, num_agents: int, act_dim: int = ACT_DIM
) -> ActorCritic:
    """Build the policy a validated ``PolicyConfig`` describes; the config is kept as ``policy.config``.

    ``act_dim``: dimensions of the Gaussian head (ignored with ``cfg.num_actions``, a categorical head).
    """
    policy = _POLICY_CLASSES[cfg.name](
        layout,
        num_agents,
        preset=cfg.preset,
        critic=cfg.critic,
        init_log_std=cfg.init_log_std,
        log_std_bounds=cfg.log_std_bounds,
        act_dim=act_dim,
        num_actions=cfg.num_actions,
        **cfg.encoder_kwargs(),
    )
    if cfg.close_range is not None:
        encoder = _POLICY_CLASSES[cfg.name].encoder_cls
        near = encoder.from_preset(layout, cfg.preset, **cfg.encoder_kwargs())
        column = None if cfg.column_range is None else encoder.from_preset(layout, cfg.preset, **cfg.encoder_kwargs())
        policy.actor = CloseRangeActor.around(policy.actor, near, layout, cfg.close_range, cfg.column_range, column,
                                              cfg.close_time, cfg.column_time)
    policy.config = cfg
    return policy


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
