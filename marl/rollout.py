"""The rollout buffer and generalised advantage estimation (GAE).

One buffer holds ``T`` control steps of ``E`` environments x ``M`` agents, preallocated once and
overwritten every update. Each row (t, e) keeps its M agents together, because a policy may look at
all agents of an environment at once (a centralised critic); minibatches are drawn over rows.

Episodes here only ever end by the time limit (truncation); the rollout adds ``gamma * V(final_obs)``
to the reward of a truncated step, so that the cut of the episode is not mistaken for a terminal
state the critic should learn (the observation has no clock). A true termination gets no bootstrap.
"""

from __future__ import annotations

import torch


class RolloutBuffer:
    """Preallocated storage for one rollout. Shapes: T steps, E envs, M agents, D obs features."""

    def __init__(self, steps: int, num_envs: int, num_agents: int, obs_dim: int, act_dim: int, device="cpu",
                 teacher: bool = False):
        """``teacher``: also hold the teacher's action on every observation (``teacher_actions``, for the
        behaviour-cloning term of ``pretrain.bc``) and the samples it applies to (``teacher_weights``);
        without it both are None."""
        t, e, m = steps, num_envs, num_agents
        z = lambda *s: torch.zeros(*s, device=device)  # noqa: E731
        self.steps = steps
        self.obs = z(t, e, m, obs_dim)  # [T, E, M, D]
        self.actions = z(t, e, m, act_dim)  # [T, E, M, 4]
        self.logprobs = z(t, e, m)  # [T, E, M]
        self.values = z(t, e, m)  # [T, E, M] denormalised
        self.rewards = z(t, e, m)  # [T, E, M] incl. the truncation bootstrap
        self.dones = z(t, e)  # [T, E] 1 where the episode ended at this step (next obs is a new episode)
        self.advantages = z(t, e, m)
        self.returns = z(t, e, m)
        self.teacher_actions = z(t, e, m, act_dim) if teacher else None  # [T, E, M, 4]
        self.teacher_weights = z(t, e, m) if teacher else None  # [T, E, M] 1 where the term applies

    def compute_gae(self, last_value: torch.Tensor, gamma: float, lam: float) -> None:
        """Fill advantages and returns (= advantages + values) from the stored rollout.

        last_value: [E, M] value of the observation after the last step (denormalised).
        """
        last_gae = torch.zeros_like(last_value)
        for t in reversed(range(self.steps)):
            next_value = last_value if t == self.steps - 1 else self.values[t + 1]
            not_done = (1.0 - self.dones[t]).unsqueeze(-1)  # [E, 1]
            delta = self.rewards[t] + gamma * next_value * not_done - self.values[t]
            last_gae = delta + gamma * lam * not_done * last_gae
            self.advantages[t] = last_gae
        torch.add(self.advantages, self.values, out=self.returns)

    def flat(self) -> dict[str, torch.Tensor]:
        """Views with (T, E) merged into rows B = T * E: obs [B, M, D], actions (and teacher_actions when held)
        [B, M, 4], others (teacher_weights) [B, M]."""
        merge = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        out = {
            "obs": merge(self.obs), "actions": merge(self.actions), "logprobs": merge(self.logprobs),
            "values": merge(self.values), "advantages": merge(self.advantages), "returns": merge(self.returns),
        }
        if self.teacher_actions is not None:
            out["teacher_actions"], out["teacher_weights"] = merge(self.teacher_actions), merge(self.teacher_weights)
        return out
