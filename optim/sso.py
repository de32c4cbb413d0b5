"""SSO: target-based surrogate optimisation (Lavington, Vaswani, Babanezhad, Schmidt, Le Roux, ICML 2023).

Minimises l(f(theta)) where the gradient of l in the targets z = f(theta) is the expensive part: each
outer step takes one expensive gradient G = dl/dz, then m cheap inner steps on the surrogate
<G, f(theta) - z_t> + (1 / eta) D(f(theta), z_t) (Euclidean or KL divergence). Three ways in:

- ``SSO(params, model_fn, loss_fn)``: a torch optimiser with ``step(batch)`` (supervised, imitation);
- ``sso_step(params, forward, target_loss, ...)``: the same step as a function of two closures;
- ``fma_policy_update(...)``: the functional mirror ascent policy update for a PPO-style trainer.

Design note (surrogate, majorisation, step-size schedules, inner loop, why hand-written):
docs/design/sso.md.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

# Inner optimisers come from the library half of the registry (torch.optim, pytorch-optimizer): the
# registry imports this module, so importing it back would close a circle.
from optim.library import build, is_second_order, needs_closure, resolve

__all__ = [
    "ETA_SCHEDULES",
    "ArmijoConfig",
    "FMAStats",
    "SSO",
    "SSOStats",
    "armijo_descent",
    "default_eta",
    "fma_policy_update",
    "sso_step",
    "surrogate_value",
]

ETA_SCHEDULES = ("constant", "sqrt", "line_search")
DIVERGENCES = ("euclidean", "kl")
NAMED_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "bce": F.binary_cross_entropy_with_logits,
    "ce": F.cross_entropy,
}


def default_eta(loss: str, num_classes: int | None = None) -> float:
    """The reference's target step size for a named mean loss: mse 1/4, bce 2, ce 1/(1 - 1/K)."""
    if loss == "mse":
        return 0.25
    if loss == "bce":
        return 2.0
    if loss == "ce":
        k = num_classes or 2
        return 1.0 / (1.0 - 1.0 / k)
    raise ValueError(f"no default eta for loss {loss!r}; use one of mse, bce, ce or pass eta")


@dataclass
class ArmijoConfig:
    """Gradient descent with Armijo backtracking, the reference's inner optimiser."""

    c: float = 0.1  # sufficient-decrease constant
    shrink: float = 0.9  # step size multiplier per backtrack
    init_step: float = 10.0  # initial step size at each outer step, and the cap of the step-size reset
    # The reference's step-size reset: every inner step starts from the last accepted step size times this
    # (capped at init_step), so a step shrunk by one hard backtrack can grow back. 1 keeps it shrunk.
    grow: float = 2.0
    max_backtracks: int = 100  # per inner step; if exhausted, the step is not taken and the loop stops
    grad_tol: float = 1e-6  # stop when the surrogate gradient norm falls to this


@dataclass
class InnerResult:
    """What an inner loop did."""

    start: float
    end: float
    steps: int = 0
    backtracks: int = 0
    step_size: float | None = None
    grad_norm: float | None = None


@dataclass
class SSOStats:
    """One outer SSO step: the loss at z_t and what the inner loop did (values are Python floats)."""

    loss: float
    eta: float
    surrogate_start: float
    surrogate_end: float
    inner_steps: int
    backtracks: int
    grad_evals: int = 1  # expensive gradient evaluations (dl/dz)
    loss_evals: int = 1  # loss evaluations, including the target-space line search


@dataclass
class FMAStats:
    """One functional-mirror-ascent policy update (values are Python floats)."""

    objective_start: float  # surrogate J at the call's theta (0 when pi_t is the current policy)
    objective_end: float  # surrogate J after the inner steps (to maximise)
    kl: float  # mean KL(pi_t || pi_theta) after the update, pi_t the behaviour policy
    inner_steps: int
    backtracks: int
    extra: dict[str, float] = field(default_factory=dict)


def _flat_norm_sq(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((t.detach() ** 2).sum() for t in tensors) if tensors else torch.tensor(0.0)


def armijo_descent(
    params: Sequence[torch.Tensor], objective: Callable[[], torch.Tensor], steps: int, cfg: ArmijoConfig | None = None
) -> InnerResult:
    """Minimise ``objective()`` over ``params`` in place by ``steps`` of gradient descent with Armijo backtracking.

    Each step: value and gradient at theta; try theta - a * grad with a = ``cfg.init_step`` at the first step and
    min(``cfg.grow`` * the last accepted a, ``cfg.init_step``) after (the reference's step-size reset); shrink a by
    ``cfg.shrink`` until value(theta') <= value - c * a * ||grad||^2. The objective
    never increases: a step whose backtracks run out is not taken, and the loop stops.
    """
    cfg = cfg or ArmijoConfig()
    params = [p for p in params if p.requires_grad]
    alpha = cfg.init_step
    with torch.enable_grad():
        value = objective()
    res = InnerResult(start=float(value.detach()), end=float(value.detach()), step_size=alpha)
    for step in range(steps):
        with torch.enable_grad():
            grads = torch.autograd.grad(value, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        gnorm_sq = float(_flat_norm_sq(grads))
        res.grad_norm = math.sqrt(gnorm_sq)
        if res.grad_norm <= cfg.grad_tol:
            break
        old = [p.detach().clone() for p in params]
        v0 = float(value.detach())
        if step > 0:
            alpha = min(alpha * cfg.grow, cfg.init_step)
        accepted = False
        for _bt in range(cfg.max_backtracks + 1):
            with torch.no_grad():
                for p, p0, g in zip(params, old, grads, strict=True):
                    p.copy_(p0 - alpha * g)
            # With a next step to come, the trial keeps its graph: once accepted, its gradient is that step's.
            with torch.set_grad_enabled(step < steps - 1):
                value = objective()
            trial = float(value.detach())
            if trial <= v0 - cfg.c * alpha * gnorm_sq:
                accepted = True
                break
            if _bt == cfg.max_backtracks:
                break
            alpha *= cfg.shrink
            res.backtracks += 1
        if not accepted:
            with torch.no_grad():
                for p, p0 in zip(params, old, strict=True):
                    p.copy_(p0)
            break
        res.steps += 1
        res.end = trial
        res.step_size = alpha
    return res


def _registry_descent(
    params: Sequence[torch.Tensor], objective: Callable[[], torch.Tensor], steps: int, name: str,
    kwargs: dict[str, Any] | None,
) -> InnerResult:
    opt = build(name, params, **(kwargs or {}))
    second = is_second_order(name)
    with torch.no_grad():
        start = float(objective())
    res = InnerResult(start=start, end=start)

    def closure() -> torch.Tensor:
        with torch.enable_grad():
            opt.zero_grad(set_to_none=True)
            value = objective()
            value.backward(create_graph=second)
        return value

    for _ in range(steps):
        if needs_closure(name):
            opt.step(closure)
        else:
            closure()
            opt.step()
        res.steps += 1
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        res.end = float(objective())
    return res


def _num_examples(z: torch.Tensor) -> int:
    return z.numel() // z.shape[-1] if z.dim() > 1 else z.numel()


def _divergence(z: torch.Tensor, z_t: torch.Tensor, kind: str) -> torch.Tensor:
    """Sum over examples of D(z_i, z_t,i): squared distance / 2 or KL(p_t || p) of the logits."""
    if kind == "euclidean":
        return 0.5 * ((z - z_t) ** 2).sum()
    if kind == "kl":
        if z.dim() == 1 or z.shape[-1] == 1:  # Bernoulli logits
            p_t = torch.sigmoid(z_t)
            return (
                p_t * (F.logsigmoid(z_t) - F.logsigmoid(z)) + (1 - p_t) * (F.logsigmoid(-z_t) - F.logsigmoid(-z))
            ).sum()
        logp_t = F.log_softmax(z_t, dim=-1)
        return (logp_t.exp() * (logp_t - F.log_softmax(z, dim=-1))).sum()
    raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {kind!r}")


def surrogate_value(
    z: torch.Tensor, z_t: torch.Tensor, grad: torch.Tensor, eta: float, divergence: str = "euclidean",
    num_examples: int | None = None,
) -> torch.Tensor:
    """g_t at targets z: <G, z - z_t> + (1 / (eta n)) sum_i D(z_i, z_t,i); l(z_t) + g_t majorises l when smooth."""
    n = num_examples or _num_examples(z_t)
    return (grad * (z - z_t)).sum() + _divergence(z, z_t, divergence) / (eta * n)


def _target_line_search(
    z_t: torch.Tensor, grad: torch.Tensor, loss_t: float, target_loss: Callable[[torch.Tensor], torch.Tensor],
    eta: float, n: int, cfg: ArmijoConfig,
) -> tuple[float, int]:
    """Largest eta (from ``eta``, shrinking) with l(z_t - eta n G) <= l(z_t) + c <G, -eta n G>; loss evals only."""
    gsq = float((grad**2).sum())
    evals = 0
    for _ in range(cfg.max_backtracks):
        with torch.no_grad():
            trial = float(target_loss(z_t - eta * n * grad))
        evals += 1
        if trial <= loss_t - cfg.c * eta * n * gsq:
            break
        eta *= cfg.shrink
    return eta, evals


def sso_step(
    params: Iterable[torch.Tensor],
    forward: Callable[[], torch.Tensor],
    target_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    eta: float = 1.0,
    divergence: str = "euclidean",
    inner_steps: int = 5,
    inner: str = "armijo",
    inner_kwargs: dict[str, Any] | None = None,
    armijo: ArmijoConfig | None = None,
    line_search: bool = False,
    num_examples: int | None = None,
) -> SSOStats:
    """One SSO outer step, in place on ``params``.

    ``forward()`` returns the targets z = f(theta) on the batch (cheap, called many times);
    ``target_loss(z)`` returns the scalar batch loss l(z) (its gradient in z is the expensive part, taken
    once). ``inner`` is ``"armijo"`` or any ``optim.build`` name, run for ``inner_steps`` steps on the
    surrogate. With ``line_search`` the target step size is searched from ``eta`` down (``ArmijoConfig``).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    params = [p for p in params if p.requires_grad]
    cfg = armijo or ArmijoConfig()
    with torch.no_grad():
        z_t = forward().detach().clone()  # clone: an output may alias a parameter updated in place
    n = num_examples or _num_examples(z_t)
    with torch.enable_grad():
        z_leaf = z_t.clone().requires_grad_(True)
        loss_t = target_loss(z_leaf)
        (grad,) = torch.autograd.grad(loss_t, z_leaf)
    grad = grad.detach()
    loss_evals = 1
    if line_search:
        eta, evals = _target_line_search(z_t, grad, float(loss_t.detach()), target_loss, eta, n, cfg)
        loss_evals += evals

    def objective() -> torch.Tensor:
        return surrogate_value(forward(), z_t, grad, eta, divergence, n)

    if inner == "armijo":
        res = armijo_descent(params, objective, inner_steps, cfg)
    else:
        res = _registry_descent(params, objective, inner_steps, inner, inner_kwargs)
    return SSOStats(
        loss=float(loss_t.detach()), eta=float(eta), surrogate_start=res.start, surrogate_end=res.end,
        inner_steps=res.steps, backtracks=res.backtracks, loss_evals=loss_evals,
    )


class SSO(torch.optim.Optimizer):
    """SSO as a torch optimiser: ``step(batch)`` does one outer step on ``batch = (inputs, labels)``.

    ``model_fn(inputs)`` gives the targets z (e.g. a module's logits or a policy's action means) and
    ``loss_fn(z, labels)`` the mean batch loss; ``loss_fn`` may also be a name, ``mse``, ``bce`` or ``ce``
    (torch.nn.functional's), which also sets the default eta (``default_eta``; ``num_classes`` for ce).
    The param group's ``lr`` is eta, so LR schedulers schedule the target step size. ``eta_schedule``:
    constant, sqrt (eta / sqrt(t)) or line_search (target-space Armijo from eta down). Counters of
    expensive gradient evaluations, loss evaluations and inner steps are in ``self.counters``; the last
    step's ``SSOStats`` in ``self.last``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        model_fn: Callable[[Any], torch.Tensor],
        loss_fn: Callable[[torch.Tensor, Any], torch.Tensor] | str,
        *,
        eta: float | None = None,
        eta_schedule: str = "constant",
        divergence: str = "euclidean",
        inner_steps: int = 5,
        inner: str = "armijo",
        inner_kwargs: dict[str, Any] | None = None,
        armijo: ArmijoConfig | None = None,
        num_classes: int | None = None,
        num_examples: int | None = None,
    ) -> None:
        if eta_schedule not in ETA_SCHEDULES:
            raise ValueError(f"eta_schedule must be one of {', '.join(ETA_SCHEDULES)}, got {eta_schedule!r}")
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        if isinstance(loss_fn, str):
            if loss_fn not in NAMED_LOSSES:
                raise ValueError(f"loss_fn must be a callable or one of {', '.join(NAMED_LOSSES)}, got {loss_fn!r}")
            eta = default_eta(loss_fn, num_classes) if eta is None else eta
            loss_fn = NAMED_LOSSES[loss_fn]
        if eta is None:
            eta = 1.0
        if eta <= 0 or inner_steps < 1:
            raise ValueError(f"need eta > 0 and inner_steps >= 1, got eta={eta}, inner_steps={inner_steps}")
        if inner != "armijo":
            resolve(inner)  # fail now on an unknown inner optimiser
        super().__init__(params, {"lr": eta})
        self.model_fn, self.loss_fn = model_fn, loss_fn
        self.eta_schedule, self.divergence = eta_schedule, divergence
        self.inner_steps, self.inner, self.inner_kwargs = inner_steps, inner, inner_kwargs
        self.armijo = armijo or ArmijoConfig()
        self.num_examples = num_examples
        self.counters = {"outer_steps": 0, "grad_evals": 0, "loss_evals": 0, "inner_steps": 0, "backtracks": 0}
        self.last: SSOStats | None = None

    def current_eta(self) -> float:
        """Eta for the next step under the schedule (before any line search)."""
        eta = float(self.param_groups[0]["lr"])
        if self.eta_schedule == "sqrt":
            eta /= math.sqrt(self.counters["outer_steps"] + 1)
        return eta

    def step(self, batch: tuple[Any, Any]) -> torch.Tensor:  # type: ignore[override]
        """One outer step on ``batch = (inputs, labels)``; returns the batch loss at the start of the step."""
        inputs, labels = batch
        params = [p for g in self.param_groups for p in g["params"]]
        stats = sso_step(
            params, lambda: self.model_fn(inputs), lambda z: self.loss_fn(z, labels), eta=self.current_eta(),
            divergence=self.divergence, inner_steps=self.inner_steps, inner=self.inner,
            inner_kwargs=self.inner_kwargs, armijo=self.armijo, line_search=self.eta_schedule == "line_search",
            num_examples=self.num_examples,
        )
        c = self.counters
        c["outer_steps"] += 1
        c["grad_evals"] += stats.grad_evals
        c["loss_evals"] += stats.loss_evals
        c["inner_steps"] += stats.inner_steps
        c["backtracks"] += stats.backtracks
        self.last = stats
        return torch.tensor(stats.loss)


def _sum_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    while x.dim() > like.dim():
        x = x.sum(-1)
    return x


def fma_policy_update(
    params: Iterable[torch.Tensor],
    dist_fn: Callable[[torch.Tensor], torch.distributions.Distribution],
    obs: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eta: float = 1.0,
    inner_steps: int = 5,
    inner: str = "armijo",
    inner_kwargs: dict[str, Any] | None = None,
    armijo: ArmijoConfig | None = None,
    kl: str = "analytic",
    behaviour: torch.distributions.Distribution | None = None,
) -> FMAStats:
    """Functional mirror ascent policy update (FMA-PG), SSO's RL form; an alternative to PPO's clipped step.

    On one batch of on-policy samples (s, a) ~ pi_t with advantages A, maximise over the policy parameters

        J(theta) = mean[A * (log pi_theta(a|s) - log pi_t(a|s))] - (1 / eta) mean KL(pi_t(.|s) || pi_theta(.|s))

    by ``inner_steps`` of ``inner`` (Armijo gradient ascent by default, or any registry name) on the fixed
    batch: the environment samples (the expensive part) are used once, the inner steps are cheap.
    ``kl="sample"`` uses the sampled form mean[(A + 1/eta) (log pi_theta(a|s) - log pi_t(a|s))] (equal in
    expectation, for distributions without an analytic KL).

    pi_t is the policy that collected the samples: ``behaviour``, the distribution it had on ``obs``
    (detached; the trainer keeps it for the whole rollout, so every minibatch and epoch of one update
    works on one surrogate, as FMA-PG builds it), or, without it, ``dist_fn(obs)`` at the call (then the
    batch must come from the current policy). ``FMAStats.kl`` is KL(pi_t || pi_theta) after the update.

    Shapes: obs [N, ...], actions [N, ...], advantages [N] (or [E, M]: any leading shape; per-sample
    log-probabilities and KLs are summed over trailing action dimensions down to the advantages' shape).
    ``dist_fn(obs)`` returns a ``torch.distributions.Distribution`` whose parameters depend on ``params``.
    Normalise advantages before the call if wanted. Returns ``FMAStats``.
    """
    if kl not in ("analytic", "sample"):
        raise ValueError(f"kl must be 'analytic' or 'sample', got {kl!r}")
    params = [p for p in params if p.requires_grad]
    adv = advantages.detach()
    with torch.no_grad():
        # A copy: the tensors of a distribution made here may alias parameters updated in place.
        old = copy.deepcopy(dist_fn(obs)) if behaviour is None else behaviour
        old_logp = _sum_to(old.log_prob(actions), adv).detach()

    def pieces() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        new = dist_fn(obs)
        log_ratio = _sum_to(new.log_prob(actions), adv) - old_logp
        div = _sum_to(torch.distributions.kl_divergence(old, new), adv).mean() if kl == "analytic" else None
        return new, log_ratio, div

    def objective() -> torch.Tensor:  # minimised: -J
        _, log_ratio, div = pieces()
        if kl == "analytic":
            return -((adv * log_ratio).mean() - div / eta)
        return -((adv + 1.0 / eta) * log_ratio).mean()

    if inner == "armijo":
        res = armijo_descent(params, objective, inner_steps, armijo)
    else:
        res = _registry_descent(params, objective, inner_steps, inner, inner_kwargs)
    with torch.no_grad():
        new = dist_fn(obs)
        try:
            kl_after = float(_sum_to(torch.distributions.kl_divergence(old, new), adv).mean())
        except NotImplementedError:  # no analytic KL: the sampled estimate
            kl_after = float((old_logp - _sum_to(new.log_prob(actions), adv)).mean())
    return FMAStats(
        objective_start=-res.start, objective_end=-res.end, kl=kl_after, inner_steps=res.steps,
        backtracks=res.backtracks,
    )
