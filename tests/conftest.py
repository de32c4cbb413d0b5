"""Shared test settings: the simulator tests use tiny batches, for which one thread is fastest."""

import torch

torch.set_num_threads(1)


def actor_and_states(test_states: int):
    """A deployable attention actor with a 100x action layer (actions span [-1, 1]), 1,024 calibration
    states (seed 0) and ``test_states`` test states (seed 1) recorded in the default obstacle env."""
    from agents import make_policy
    from deploy.calibration import default_env_config, record_states
    from envs.observations import obs_spec

    torch.manual_seed(0)
    cfg = default_env_config(2)
    actor = make_policy("attention", obs_spec(2), 8, preset="deployable").actor.eval()
    with torch.no_grad():
        actor.mean.weight.mul_(100.0)
    return actor, record_states(cfg, 1024, seed=0, steps=200), record_states(cfg, test_states, seed=1, steps=200)
