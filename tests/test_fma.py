"""SSO's RL form (functional mirror ascent, optim.sso.fma_policy_update) on a problem with a known answer,
and the inner Armijo loop's step-size reset."""

from __future__ import annotations

import torch
from torch import nn

from optim.sso import ArmijoConfig, armijo_descent, fma_policy_update

D, A, N = 3, 2, 256
ARMIJO = ArmijoConfig(init_step=1.0, shrink=0.5)  # as marl.ppo runs it


class LinearGaussian(nn.Module):
    """pi(a|s) = N(W s, sigma^2 I): a contextual bandit policy whose expected return has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(A, D))
        self.log_std = nn.Parameter(torch.full((A,), -0.5))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Normal(obs @ self.w.T, self.log_std.exp().expand(len(obs), A))


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w_star = torch.randn(A, D, generator=g)
    obs = torch.randn(N, D, generator=g)
    return w_star, obs, g


def expected_return(pi: LinearGaussian, w_star: torch.Tensor) -> float:
    """E_s E_a[-||a - W* s||^2] for s ~ N(0, I): -||W - W*||_F^2 - sum sigma^2."""
    with torch.no_grad():
        return float(-((pi.w - w_star) ** 2).sum() - (2 * pi.log_std).exp().sum())


def _fma_epochs(pi, w_star, obs, g, sign: float = 1.0, epochs: int = 3, eta: float = 0.5, fixed: bool = True):
    """One rollout from the behaviour policy, then ``epochs`` x 4 minibatch FMA updates on it; ``fixed``:
    every update measures from the behaviour policy (else from the policy at the call)."""
    with torch.no_grad():
        behaviour = pi(obs)
        actions = behaviour.loc + behaviour.scale * torch.randn(behaviour.loc.shape, generator=g)
    reward = -((actions - obs @ w_star.T) ** 2).sum(-1)
    adv = sign * (reward - reward.mean()) / reward.std()
    frozen = torch.distributions.Normal(behaviour.loc.clone(), behaviour.scale.clone())
    stats = []
    for _ in range(epochs):
        for idx in torch.randperm(N, generator=g).split(N // 4):
            part = torch.distributions.Normal(frozen.loc[idx], frozen.scale[idx])
            stats.append(fma_policy_update(pi.parameters(), pi, obs[idx], actions[idx], adv[idx], eta=eta,
                                           behaviour=part if fixed else None, armijo=ARMIJO))
    return frozen, actions, stats


def test_fma_raises_the_expected_return_and_a_negated_advantage_lowers_it():
    for sign in (1.0, -1.0):
        w_star, obs, g = _problem(1)
        pi = LinearGaussian()
        before = expected_return(pi, w_star)
        for _ in range(3):  # three rollouts, each with its own behaviour policy
            _fma_epochs(pi, w_star, obs, g, sign=sign, eta=0.2)
        change = (expected_return(pi, w_star) - before) / abs(before)
        # Measured: +43 % of |J| with the advantages as given, -43 % with them negated (a sign error).
        assert change > 0.2 if sign > 0 else change < -0.2, (sign, change)


def test_fma_measures_and_bounds_the_kl_to_the_behaviour_policy_of_the_rollout():
    drift = {}
    for fixed in (True, False):
        w_star, obs, g = _problem(1)
        pi = LinearGaussian()
        frozen, _, stats = _fma_epochs(pi, w_star, obs, g, epochs=2, eta=0.02, fixed=fixed)
        with torch.no_grad():
            drift[fixed] = float(torch.distributions.kl_divergence(frozen, pi(obs)).sum(-1).mean())
        if fixed:
            # Each minibatch reports KL(behaviour || policy after it), an estimate of the whole batch's.
            assert abs(stats[-1].kl - drift[True]) < 0.3 * drift[True]
            assert abs(stats[0].objective_start) < 1e-6  # J(theta_behaviour) = 0
            assert abs(stats[-1].objective_start) > 1e-6  # later minibatches start away from it
        else:
            # Measured from the policy at each call, the reported KL misses most of the update's drift.
            assert stats[-1].kl < 0.5 * drift[False]
    # One surrogate per rollout keeps the update near its maximiser; resetting the reference on every
    # minibatch lets the 8 steps compound (measured: 0.0002 against 0.015, 77x).
    assert drift[False] > 10 * drift[True]


def _quadratic_descent(grow: float):
    x = torch.tensor([3.0, -2.0], requires_grad=True)
    return armijo_descent([x], lambda: 0.5 * (x * x).sum(), 4, ArmijoConfig(grow=grow))


def test_armijo_step_size_grows_back_between_inner_steps():
    reset, kept = _quadratic_descent(2.0), _quadratic_descent(1.0)
    # With the reset every inner step starts above the last accepted size and backtracks again; without it
    # only the first step backtracks. Both accept steps within init_step and decrease the objective.
    assert reset.backtracks > kept.backtracks
    assert kept.backtracks == _quadratic_descent(1.0).backtracks
    assert reset.steps == kept.steps == 4 and reset.end < reset.start and reset.step_size <= 10.0
