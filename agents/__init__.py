"""Policies: observations [B, M, D] -> per-agent action distributions and values.

``make_policy(name, layout, num_agents, **kwargs)`` builds one of ``POLICIES`` ("mlp", "attention",
"deepsets", "commformer"); the built-in ``pid`` controller (agents.pid) is not trainable and is
resolved by name where a policy is evaluated; ``PolicyConfig`` is the validated ``agent:`` section of
an experiment file; ``load_policy(path)`` rebuilds a trained policy from its checkpoint alone (no
environment, see agents.checkpoint). The SB3 features extractor lives in ``agents.sb3`` (imported on
demand, so SB3 is only needed there).
"""

from agents.base import ActorCritic, ObsLayout
from agents.checkpoint import CheckpointError, load_policy, load_policy_checkpoint, policy_record
from agents.config import POLICIES, PRESETS, PolicyConfig
from agents.registry import count_parameters, make_policy, make_policy_from_config

__all__ = [
    "POLICIES",
    "PRESETS",
    "ActorCritic",
    "CheckpointError",
    "ObsLayout",
    "PolicyConfig",
    "count_parameters",
    "load_policy",
    "load_policy_checkpoint",
    "make_policy",
    "make_policy_from_config",
    "policy_record",
]
