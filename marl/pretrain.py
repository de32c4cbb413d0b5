"""Warm start: the ``pretrain:`` section, run once on a fresh run's policy before reinforcement learning.

DAgger of a built-in controller (``pid_avoid`` by default) into the policy's action means
(``marl.imitation.dagger``), or the weights of a trained policy (``init_from``: fine-tuning one); then, for a
close-range actor (``agent.close_range``), the fit of its near network (``close_range``). The learner then
trains only the critic for ``critic_warmup_updates``. The rollouts it flies count towards
the run's agent steps and wall time, so a run's time to success includes its warm start.
"""

from __future__ import annotations

import time
from typing import Any

from agents.base import ActorCritic
from agents.checkpoint import load_policy
from envs.config import SwarmConfig
from marl.imitation import dagger, fit_close_range, make_teacher
from marl.train_config import PretrainConfig


def warm_start(policy: ActorCritic, env: SwarmConfig, cfg: PretrainConfig, seed: int = 0,
               workers: int = 1) -> dict[str, Any]:
    """Imitate ``cfg.teacher`` into ``policy`` in place (or load ``cfg.init_from``), then fit its close-range
    networks when ``cfg.close_range`` asks, side by side in ``workers`` threads (``fit_close_range``); returns
    what it cost and how well the fits went."""
    t0 = time.perf_counter()
    device = next(policy.parameters()).device
    episode_steps = round(env.episode_seconds / env.dynamics.control_dt)
    if cfg.init_from is not None:
        load_weights(policy, cfg.init_from, refit_near=cfg.close_range is not None)
        out: dict[str, Any] = {"init_from": cfg.init_from, "agent_steps": 0}
    else:
        out = imitate(policy, env, cfg, seed)
    if cfg.close_range is not None:
        teacher = make_teacher(cfg.teacher, env, device=device, gains=cfg.teacher_gains)
        c = cfg.close_range
        out["close_range"] = fit_close_range(policy, env, teacher, swarms=c.swarms, rounds=c.rounds,
                                             fit_steps=c.fit_steps, batch=c.batch, lr=c.lr, seed=seed,
                                             closing_weight=c.closing_weight, lr_decay=bool(c.lr_decay),
                                             workers=workers)
        out["agent_steps"] += c.rounds * c.swarms * episode_steps * env.num_drones
    return {**out, "wall_s": time.perf_counter() - t0}


def imitate(policy: ActorCritic, env: SwarmConfig, cfg: PretrainConfig, seed: int = 0) -> dict[str, Any]:
    """DAgger of ``cfg.teacher`` into ``policy`` in place; returns its agent steps, data rows and fit."""
    device = next(policy.parameters()).device
    teacher = make_teacher(cfg.teacher, env, device=device, gains=cfg.teacher_gains)
    result = dagger(policy, env, teacher, iterations=cfg.iterations, beta0=cfg.beta0, beta_decay=cfg.beta_decay,
                    optimizer=cfg.optimizer, num_envs=cfg.num_envs, fit_steps=cfg.fit_steps, batch=cfg.batch,
                    lr=cfg.lr, seed=seed, hazard_weight=cfg.hazard_weight or 0.0,
                    action_noise=cfg.action_noise or 0.0, focus_envs=cfg.focus.envs if cfg.focus else 0,
                    focus_threshold=cfg.focus.threshold if cfg.focus else 0.5, lr_decay=bool(cfg.lr_decay))
    episode_steps = round(env.episode_seconds / env.dynamics.control_dt)
    swarms = (cfg.iterations + 1) * cfg.num_envs + (cfg.iterations * cfg.focus.envs if cfg.focus else 0)
    return {
        "teacher": cfg.teacher,
        "agent_steps": swarms * episode_steps * env.num_drones,
        "rows": len(result.data),
        "fit_loss": result.iterations[-1].fit_loss,
        "teacher_fraction": [it.teacher_fraction for it in result.iterations],
    }


def load_weights(policy: ActorCritic, source: str, refit_near: bool = False) -> None:
    """Copy the weights of the trained policy at ``source`` into ``policy`` in place, except the action
    log-std (the run's ``agent.init_log_std`` sets its exploration). ValueError when the two differ in shape.
    ``refit_near``: the gated networks of a close-range actor may be missing from ``source``; each then starts
    as a copy of the far one (the policy flies as ``source`` did until they are fitted)."""
    trained = load_policy(source, device=next(policy.parameters()).device)
    own = policy.state_dict()
    gated = ("actor.near.", "actor.column.")
    keep = {k for k in own if k.endswith("log_std") or (refit_near and k.startswith(gated))}
    state = {k: v for k, v in trained.state_dict().items() if k not in keep}
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise ValueError(f"pretrain.init_from={source!r} does not fit agent: {err}") from None
    if unexpected or set(missing) - keep:
        raise ValueError(f"pretrain.init_from={source!r} is a {type(trained).__name__} whose weights do not fit "
                         f"agent ({type(policy).__name__}): missing {sorted(set(missing) - keep)}, "
                         f"unexpected {sorted(unexpected)}")
    if refit_near:
        actor = policy.actor
        far = {k: v for k, v in actor.state_dict().items() if k.startswith(("encoder.", "mean."))}
        for name, head in actor.heads().items():
            if any(k.startswith(f"actor.{name}.") for k in missing):
                head.load_state_dict(far)
