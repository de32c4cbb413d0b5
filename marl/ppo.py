"""The PPO update (clipped surrogate, clipped value loss, entropy bonus), value normalisation and the NaN guard.

``ppo_update`` is the whole algorithm after the rollout and reads top to bottom like CleanRL's. With
shared parameters it is MAPPO when the policy's critic sees all agents of an environment and IPPO
when it sees each agent's own observation; the update itself is the same.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from agents.base import ActorCritic
from marl.rollout import RolloutBuffer
from marl.train_config import TrainConfig
from optim.sso import ArmijoConfig, FMAStats, fma_policy_update


class NonFiniteError(RuntimeError):
    """A NaN or inf appeared in a named tensor; training stops instead of corrupting the run."""

    def __init__(self, tensor: str, update: int, detail: str = ""):
        self.tensor, self.update = tensor, update
        msg = f"non-finite values in {tensor} at update {update}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


def check_finite(name: str, x: torch.Tensor, update: int) -> None:
    """Raise NonFiniteError naming ``name`` and the update when ``x`` holds a NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(name, update, f"{bad} of {x.numel()} values")


def check_parameters(module: nn.Module, update: int, grads: bool = False) -> None:
    """Raise NonFiniteError naming the first parameter (or its gradient) that is not finite."""
    for name, p in module.named_parameters():
        x = p.grad if grads else p
        if x is not None and not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{'gradient of ' if grads else 'parameter '}{name}", update)


class ValueNorm(nn.Module):
    """Running (debiased exponential) mean and std of the value targets; the critic predicts normalised values.

    Keeps the critic's regression well scaled while returns drift from large negative to near zero as
    the swarm learns. The statistics are buffers, so they travel in the state dict and the checkpoint.
    """

    def __init__(self, beta: float = 0.99, eps: float = 1e-5):
        super().__init__()
        self.beta, self.eps = beta, eps
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean_sq", torch.zeros((), dtype=torch.float64))
        self.register_buffer("debias", torch.zeros((), dtype=torch.float64))

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 scalars; (0, 1) before the first update."""
        if float(self.debias) == 0.0:
            return torch.zeros((), device=self.mean.device), torch.ones((), device=self.mean.device)
        mean = self.mean / self.debias
        var = (self.mean_sq / self.debias - mean**2).clamp_min(self.eps)
        return mean.float(), var.sqrt().float()

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch of targets into the running statistics."""
        x = x.double()
        self.mean.mul_(self.beta).add_((1 - self.beta) * x.mean())
        self.mean_sq.mul_(self.beta).add_((1 - self.beta) * (x * x).mean())
        self.debias.mul_(self.beta).add_(1 - self.beta)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Targets -> critic units."""
        mean, std = self.stats()
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Critic units -> targets."""
        mean, std = self.stats()
        return x * std + mean


@dataclass
class Optimizers:
    """What ``ppo_update`` steps: the policy's optimiser and, for a learned communication graph, the
    optimiser of the edge logits with its cadence (bi-level: every ``edge_every``-th epoch of the run
    steps only the edges, the other epochs only the policy). ``second_order`` asks for
    ``backward(create_graph=True)`` (Hessian-based optimisers such as sophiah)."""

    policy: torch.optim.Optimizer | None
    edge: torch.optim.Optimizer | None = None
    edge_every: int = 0
    second_order: bool = False
    # optim.name: sso: functional mirror ascent on the actor (settings: a marl.train_config.FMAConfig)
    # and ``value`` for the critic, instead of ``policy``.
    fma: Any = None
    value: torch.optim.Optimizer | None = None

    def for_epoch(self, epoch: int) -> tuple[torch.optim.Optimizer, str]:
        """The optimiser of the run's ``epoch``-th PPO epoch (1-based) and its name ("policy" or "edge")."""
        if self.edge is not None and self.edge_every > 0 and epoch % self.edge_every == 0:
            return self.edge, "edge"
        return self.policy, "policy"


def _stepped_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def ppo_update(
    policy: ActorCritic,
    optimizers: Optimizers,
    buf: RolloutBuffer,
    cfg: TrainConfig,
    value_norm: ValueNorm | None,
    gen: torch.Generator,
    update: int,
    epochs_done: int = 0,
    train_actor: bool = True,
    bc_coef: float | None = None,
) -> dict[str, float]:
    """Epochs x minibatches of clipped PPO on the filled buffer; returns mean losses and diagnostics.

    ``train_actor=False`` (a critic warm-up) leaves the actor as it is: its loss terms get weight 0.
    ``bc_coef`` (``pretrain.bc``; None: off) adds ``bc_coef * mean ||mu - a_teacher||^2`` to the actor's
    loss, with the buffer's ``teacher_actions``, over the samples its ``teacher_weights`` mark;
    ``bc_loss`` (that mean) and ``bc_coef`` are then logged.

    ``epochs_done``: PPO epochs of the run before this update (the bi-level cadence counts over the
    run); the returned ``epochs`` says how many ran (``target_kl`` may stop early). The policy's
    ``gate_penalty(obs)`` (CommFormer's temporal gate; None for other policies) is added to the loss.
    ``gen`` draws the minibatch permutation (its state is checkpointed, so a resumed run draws the same).
    Raises NonFiniteError (naming the tensor and ``update``) before a step could spread a NaN.
    """
    b = buf.flat()
    adv = b["advantages"]
    if cfg.norm_adv:  # over the whole batch: minibatches then see the same scale
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    returns, old_values = b["returns"], b["values"]
    if value_norm is not None:
        value_norm.update(returns)
        returns, old_values = value_norm.normalize(returns), value_norm.normalize(old_values)
    if bc_coef is not None and "teacher_actions" not in b:
        raise ValueError("bc_coef is set but the rollout holds no teacher_actions (pretrain.bc off in the collector)")
    if optimizers.fma is not None:
        if bc_coef is not None:
            raise ValueError("the behaviour-cloning term (pretrain.bc) needs the clipped update, not optim.name='sso'")
        return fma_update(policy, optimizers, b, adv, returns, cfg, gen, update, train_actor)

    if optimizers.second_order:
        # The fused CPU attention kernel has no double backward; Hessian probes need the plain one.
        with sdpa_kernel(SDPBackend.MATH):
            return _clipped_update(policy, optimizers, b, adv, returns, old_values, cfg, gen, update, epochs_done,
                                   train_actor, bc_coef)
    return _clipped_update(policy, optimizers, b, adv, returns, old_values, cfg, gen, update, epochs_done, train_actor,
                           bc_coef)


def _clipped_update(
    policy: ActorCritic,
    optimizers: Optimizers,
    b: dict[str, torch.Tensor],
    adv: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    update: int,
    epochs_done: int,
    train_actor: bool = True,
    bc_coef: float | None = None,
) -> dict[str, float]:
    """PPO's clipped surrogate over epochs x minibatches (the body of ``ppo_update``)."""
    actor_weight = 1.0 if train_actor else 0.0  # 0: zero gradients, so Adam's moments and the actor stay put
    rows = adv.shape[0]
    mb_rows = max(1, rows // cfg.minibatches)
    sums = dict(policy_loss=0.0, value_loss=0.0, entropy=0.0, approx_kl=0.0, clip_frac=0.0, grad_norm=0.0,
                gate_penalty=0.0)
    if bc_coef is not None:
        sums["bc_loss"] = 0.0
    n = edge_steps = epochs = 0
    for _epoch in range(cfg.epochs):
        optimizer, level = optimizers.for_epoch(epochs_done + epochs + 1)
        params = _stepped_parameters(optimizer)
        epochs += 1
        perm = torch.randperm(rows, generator=gen)
        kl_epoch = 0.0
        for idx in perm[: mb_rows * cfg.minibatches].split(mb_rows):
            bc_loss = None
            if bc_coef is None:
                logp, entropy, value = policy.evaluate(b["obs"][idx], b["actions"][idx])
            else:  # the same pass as evaluate(), keeping the distribution for its mean
                dist, value = policy(b["obs"][idx])
                logp, entropy = policy.log_prob(dist, b["actions"][idx]), policy.entropy(dist)
                w = b["teacher_weights"][idx]  # [mb, M]: 1 where the term applies (all, without a radius)
                err = (dist.mean - b["teacher_actions"][idx]).square().sum(-1)
                bc_loss = (w * err).sum() / w.sum().clamp_min(1.0)
            log_ratio = logp - b["logprobs"][idx]
            ratio = log_ratio.exp()
            mb_adv = adv[idx]
            pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()

            v_err = (value - returns[idx]) ** 2
            if cfg.clip_value_loss:
                v_clipped = old_values[idx] + (value - old_values[idx]).clamp(-cfg.value_clip, cfg.value_clip)
                v_err = torch.max(v_err, (v_clipped - returns[idx]) ** 2)
            v_loss = 0.5 * v_err.mean()
            ent = entropy.mean()
            loss = actor_weight * (pg_loss - cfg.ent_coef * ent) + cfg.vf_coef * v_loss
            if bc_loss is not None and bc_coef > 0:
                loss = loss + actor_weight * bc_coef * bc_loss
            penalty = policy.gate_penalty(b["obs"][idx])  # CommFormer's communication penalty; None for most
            if penalty is not None:
                loss = loss + penalty
            check_finite("loss", loss, update)

            policy.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # The parameter <-> gradient cycle it warns about is cut by zero_grad(set_to_none=True).
                warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph=True")
                loss.backward(create_graph=optimizers.second_order)
            grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not bool(torch.isfinite(grad_norm)):
                check_parameters(policy, update, grads=True)
                raise NonFiniteError("gradient norm", update)
            optimizer.step()
            edge_steps += level == "edge"

            with torch.no_grad():
                kl = ((ratio - 1) - log_ratio).mean().item()
                sums["policy_loss"] += pg_loss.item()
                sums["value_loss"] += v_loss.item()
                sums["entropy"] += ent.item()
                sums["approx_kl"] += kl
                sums["clip_frac"] += ((ratio - 1).abs() > cfg.clip).float().mean().item()
                sums["grad_norm"] += float(grad_norm)
                sums["gate_penalty"] += float(penalty) if penalty is not None else 0.0
                if bc_loss is not None:
                    sums["bc_loss"] += bc_loss.item()
                kl_epoch += kl
            n += 1
        if cfg.target_kl is not None and kl_epoch / cfg.minibatches > cfg.target_kl:
            break
    if optimizers.second_order:  # the graph kept for Hessian products must not outlive the update
        policy.zero_grad(set_to_none=True)
    check_parameters(policy, update)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["epochs"], out["edge_steps"] = float(epochs), float(edge_steps)
    out["explained_variance"] = explained_variance(b)
    if bc_coef is not None:
        out["bc_coef"] = bc_coef * actor_weight  # the weight the actor felt (0 during a critic warm-up)
    return out


@torch.no_grad()
def explained_variance(b: dict[str, torch.Tensor]) -> float:
    """How much of the rollout's return variance the critic's values explain (1 is perfect)."""
    y, pred = b["returns"], b["values"]
    return float(1 - (y - pred).var() / y.var().clamp_min(1e-8))


def fma_update(
    policy: nn.Module,
    optimizers: Optimizers,
    b: dict[str, torch.Tensor],
    adv: torch.Tensor,
    returns: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator,
    update: int,
    train_actor: bool = True,
) -> dict[str, float]:
    """SSO's RL form instead of the clipped step (``optim.name: sso``): per minibatch, functional mirror
    ascent on the actor (``optim.sso.fma_policy_update``: the policy's distribution is the target, the
    surrogate is maximised by cheap inner steps on the fixed samples) and one gradient step of the
    critic's value loss. Same epochs, minibatches and statistics keys as ``ppo_update``.

    As FMA-PG builds it, the surrogate is one per rollout: every minibatch of every epoch measures its
    log-ratio and KL from the behaviour policy (the policy as it was when the rollout was collected, a
    frozen copy taken here: the collector acted with exactly these weights), so ``max_kl`` bounds the KL
    between the behaviour policy and the updated one. A minibatch step that leaves that region is undone
    and counted in ``rejected``, not in the logged loss, KL or inner steps; ``kl_behaviour`` is the KL of
    the whole update, estimated on the rollout's own samples after it."""
    fc = optimizers.fma
    armijo = ArmijoConfig(init_step=fc.armijo_init_step, shrink=0.5) if fc.inner == "armijo" else None
    inner_kwargs = None if fc.inner == "armijo" else {"lr": fc.inner_lr}
    actor_params = list(policy.actor.parameters())
    critic_params = list(policy.critic.parameters())
    behaviour = copy.deepcopy(policy).requires_grad_(False)
    rows = adv.shape[0]
    mb_rows = max(1, rows // cfg.minibatches)
    sums = dict(policy_loss=0.0, value_loss=0.0, approx_kl=0.0, grad_norm=0.0, inner_steps=0.0, backtracks=0.0,
                rejected=0.0)
    n = taken = 0
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(rows, generator=gen)
        for idx in perm[: mb_rows * cfg.minibatches].split(mb_rows):
            obs, actions = b["obs"][idx], b["actions"][idx]
            if policy.num_actions is not None:
                actions = actions.squeeze(-1).long()
            before = [p.detach().clone() for p in actor_params]
            with torch.no_grad():
                behaviour_dist = behaviour.distribution(obs)
            stats = FMAStats(0.0, 0.0, 0.0, 0, 0) if not train_actor else fma_policy_update(
                actor_params, policy.distribution, obs, actions, adv[idx], eta=fc.eta, behaviour=behaviour_dist,
                inner_steps=fc.inner_steps, inner=fc.inner, kl=fc.kl, inner_kwargs=inner_kwargs, armijo=armijo,
            )
            if stats.kl <= fc.max_kl:
                sums["policy_loss"] -= stats.objective_end
                sums["approx_kl"] += stats.kl
                sums["inner_steps"] += stats.inner_steps
                sums["backtracks"] += stats.backtracks
                taken += 1
            else:  # the step left the trust region around the behaviour policy: undone, not logged as taken
                with torch.no_grad():
                    for p, p0 in zip(actor_params, before, strict=True):
                        p.copy_(p0)
                sums["rejected"] += 1
            v_loss = 0.5 * ((policy.critic(obs) - returns[idx]) ** 2).mean()
            check_finite("value loss", v_loss, update)
            policy.zero_grad(set_to_none=True)
            v_loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(critic_params, cfg.max_grad_norm)
            if not bool(torch.isfinite(grad_norm)):
                raise NonFiniteError("gradient norm of the value loss", update)
            optimizers.value.step()
            sums["value_loss"] += v_loss.item()
            sums["grad_norm"] += float(grad_norm)
            n += 1
    check_parameters(policy, update)
    per_step = ("policy_loss", "approx_kl", "inner_steps", "backtracks")  # averaged over the steps taken
    out = {k: v / max(taken if k in per_step else n, 1) for k, v in sums.items()}
    with torch.no_grad():
        out["entropy"] = float(policy.entropy(policy.distribution(b["obs"][: mb_rows])).mean())
        logp, _, _ = policy.evaluate(b["obs"], b["actions"])
        out["kl_behaviour"] = float((b["logprobs"] - logp).mean())
    out["explained_variance"] = explained_variance(b)
    out["epochs"], out["edge_steps"] = float(cfg.epochs), 0.0
    return out
