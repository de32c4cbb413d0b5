"""The learner: the trained policy, its optimisers, value normalisation and the run's counters.

``Learner.update(rollout)`` computes GAE on a collector's rollout and runs the update of
``optim.name`` (clipped PPO, SSO's mirror ascent, CommFormer's bi-level schedule: ``marl.ppo``);
``weights()`` is what collectors load before their next rollout; ``state_dict`` /
``load_state_dict`` are its part of a checkpoint. The same learner serves one process and Ray
(``marl.trainer``); it never steps an environment. Design note: docs/design/distributed.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from agents.base import ActorCritic
from marl.collector import Progress, Rollout
from marl.optimizers import is_second_order, make_optimizer
from marl.ppo import Optimizers, ValueNorm, ppo_update
from marl.train_config import RunConfig


def actor_part_parameters(policy: ActorCritic, parts: list[str]) -> list[torch.nn.Parameter]:
    """The actor's parameters under ``parts`` (top-level names of ``policy.actor``: its submodules and own
    parameters). ValueError names an unknown part and lists the actor's parts."""
    children = dict(policy.actor.named_children()) | dict(policy.actor.named_parameters(recurse=False))
    unknown = [p for p in parts if p not in children]
    if unknown:
        raise ValueError(f"train.actor_parts: {unknown} not in the actor ({type(policy.actor).__name__}); "
                         f"its parts are {sorted(children)}")
    out: list[torch.nn.Parameter] = []
    for part in parts:
        child = children[part]
        out.extend([child] if isinstance(child, torch.nn.Parameter) else child.parameters())
    return out


def make_optimizers(cfg: RunConfig, policy: ActorCritic) -> Optimizers:
    """The policy optimiser and, for a policy with edge parameters and ``optim.edge.every`` > 0, the
    edge optimiser of the bi-level schedule. With ``train.actor_parts`` the optimiser steps only those parts
    of the actor and the critic; the rest of the actor stays as it is (its gradients are computed and dropped:
    ``requires_grad`` is left alone, since the warm start's imitation fits every part)."""
    oc, tc = cfg.optim, cfg.train
    if oc.name.lower() == "sso":  # functional mirror ascent on the actor, a gradient optimiser for the critic
        return Optimizers(None, fma=oc.fma,
                          value=make_optimizer(oc.fma.value_optimizer, policy.critic.parameters(), lr=tc.lr))
    edges = policy.edge_parameters()
    bilevel = bool(edges) and oc.edge.every > 0
    params = policy.policy_parameters() if bilevel else list(policy.parameters())
    if tc.actor_parts is not None:
        trained = {id(p) for p in actor_part_parameters(policy, tc.actor_parts)}
        trained |= {id(p) for p in policy.critic.parameters()}
        params = [p for p in params if id(p) in trained]
    opts = Optimizers(make_optimizer(oc.name, params, lr=tc.lr, **oc.kwargs()),
                      second_order=is_second_order(oc.name))
    if bilevel:
        opts.edge = make_optimizer(oc.edge.name, edges, lr=oc.edge.lr, **oc.edge.settings)
        opts.edge_every = oc.edge.every
    return opts


class Learner:
    """Owns ``policy`` (the trained one), its optimisers, the value norm, the minibatch generator and the
    counters; ``steps_per_update``: agent steps of one rollout of the whole batch."""

    def __init__(self, cfg: RunConfig, policy: ActorCritic, steps_per_update: int):
        tc = cfg.train
        self.cfg, self.policy, self.steps_per_update = cfg, policy, steps_per_update
        self.device = torch.device(tc.device)
        self.optimizers = make_optimizers(cfg, policy)
        # The optimiser whose learning rate follows train.lr's schedule and whose state is checkpointed.
        self.optimizer = self.optimizers.policy or self.optimizers.value
        self.value_norm = ValueNorm().to(self.device) if tc.norm_value else None
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
        self.num_updates = math.ceil(tc.total_agent_steps / steps_per_update)
        self.update = 0  # completed updates
        self.epochs = 0  # completed PPO epochs (the bi-level cadence counts them over the run)
        self.agent_steps = 0
        self.vec_steps = 0  # env steps of every collector
        self.wall_s = 0.0  # training wall time summed over sessions
        self.best_success = -1.0

    def lr(self) -> float:
        """The learning rate of the next update (linear decay to ``lr_final_fraction`` when enabled)."""
        tc = self.cfg.train
        if not tc.lr_decay:
            return tc.lr
        frac = 1.0 - self.update / self.num_updates
        return tc.lr * (tc.lr_final_fraction + (1.0 - tc.lr_final_fraction) * frac)

    def progress(self) -> Progress:
        """Where the run stands, for the next rollout."""
        return Progress(self.update, self.num_updates, self.agent_steps)

    def weights(self) -> dict[str, Any]:
        """What a collector loads before a rollout: the policy's and the value norm's state dicts."""
        return {"model": self.policy.state_dict(),
                "value_norm": self.value_norm.state_dict() if self.value_norm is not None else {}}

    def update_from(self, rollout: Rollout) -> dict[str, float]:
        """GAE and one update on ``rollout`` (NonFiniteError names a bad tensor); returns the losses."""
        tc = self.cfg.train
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.policy.set_training_progress(self.update, self.num_updates)
        rollout.buf.compute_gae(rollout.last_value.to(self.device), tc.gamma, tc.gae_lambda)
        pre = self.cfg.pretrain
        warmup = pre.critic_warmup_updates if pre is not None else 0
        # pretrain.bc: the term's weight for this update, while the rollout holds the teacher's labels.
        bc_coef = pre.bc_coef(self.update) if rollout.teacher and pre is not None else None
        stats = ppo_update(self.policy, self.optimizers, rollout.buf, tc, self.value_norm, self.gen,
                           self.update + 1, self.epochs, train_actor=self.update >= warmup, bc_coef=bc_coef)
        self.update += 1
        self.epochs += int(stats["epochs"])
        self.agent_steps += self.steps_per_update
        self.vec_steps += tc.rollout_steps
        return {"lr": lr, **stats}

    @torch.no_grad()
    def diagnostics(self, obs: torch.Tensor) -> dict[str, float]:
        """The updated policy on observations ``obs`` [E, M, D]: action std and what its communication does."""
        out: dict[str, float] = {}
        obs = obs.to(self.device)
        if self.policy.num_actions is None:
            out["action_std"] = float(self.policy(obs[:1])[0].stddev.mean())
        out.update(self.policy.communication_stats(obs))
        return out

    # ------------------------------------------------------------------ checkpoints
    def generators(self) -> dict[str, torch.Generator]:
        """The learner's generator, by the name a checkpoint stores it under."""
        return {"trainer": self.gen}

    def state_dict(self) -> dict[str, Any]:
        """Counters, model, optimisers and value norm (the learner's part of a checkpoint)."""
        return {
            "counters": {"update": self.update, "agent_steps": self.agent_steps, "vec_steps": self.vec_steps,
                         "wall_s": self.wall_s, "best_success": self.best_success, "epochs": self.epochs},
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "edge_optimizer": self.optimizers.edge.state_dict() if self.optimizers.edge is not None else {},
            "value_norm": self.value_norm.state_dict() if self.value_norm is not None else {},
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Inverse of state_dict (KeyError / RuntimeError / ValueError when it does not fit)."""
        self.policy.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.optimizers.edge is not None:
            self.optimizers.edge.load_state_dict(ckpt["edge_optimizer"])
        if self.value_norm is not None:
            self.value_norm.load_state_dict(ckpt["value_norm"])
        c = ckpt["counters"]
        self.update, self.agent_steps, self.vec_steps = int(c["update"]), int(c["agent_steps"]), int(c["vec_steps"])
        self.wall_s, self.best_success = float(c["wall_s"]), float(c["best_success"])
        self.epochs = int(c["epochs"])
