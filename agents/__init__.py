"""Policies: observations [B, M, D] -> per-agent action distributions and values.

``make_policy(name, layout, num_agents, **kwargs)`` builds one of ``POLICIES`` ("mlp", "attention",
"deepsets", "commformer"); the built-in ``pid`` controller (agents.pid) is not trainable and is
resolved by name where a policy is evaluated; ``PolicyConfig`` is the validated ``agent:`` section of
an experiment file. The SB3 features extractor lives in ``agents.sb3`` (imported on demand, so SB3 is
only needed there).
"""

from agents.base import ActorCritic, ObsLayout
from agents.config import POLICIES, PRESETS, PolicyConfig
from agents.registry import count_parameters, make_policy, make_policy_from_config

__all__ = [
    "POLICIES",
    "PRESETS",
    "ActorCritic",
    "ObsLayout",
    "PolicyConfig",
    "count_parameters",
    "make_policy",
    "make_policy_from_config",
]
