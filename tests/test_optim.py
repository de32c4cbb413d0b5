"""optim/: the registry, SSO, tpSGD, schedules and the saved-tensor meter."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import optim
from optim.memory import SavedTensorMeter
from optim.schedules import linear_decay, refined, refined_multipliers, warmup_poly
from optim.sso import SSO, ArmijoConfig, armijo_descent, fma_policy_update, sso_step, surrogate_value
from optim.tpsgd import TPSGD, sequential_forward

# Steps per name where the library default needs longer than 25 steps to show a decrease on the
# quadratic (D-Adaptation overshoots first; Ranger's RAdam warm-up moves uphill for 5 steps before its
# Lookahead pulls back) or where one step is slow (SpectralSphere solves for a spectral radius).
STEPS = {"dadaptadam": 100, "dadaptadan": 100, "ranger": 100, "spectralsphere": 2}
KWARGS = {"ranger21": {"num_iterations": 25}}


def _quadratic() -> tuple[nn.Parameter, callable]:
    torch.manual_seed(0)
    w = nn.Parameter(torch.zeros(4, 4))  # zeros: SaRA only updates weights that start below 1e-3
    target = torch.randn(4, 4)
    return w, lambda: 0.5 * ((w - target) ** 2).sum()


@pytest.mark.parametrize("name", [n for n in optim.available() if n not in optim.registry.OURS])
def test_every_registry_name_decreases_a_quadratic(name: str) -> None:
    warnings.filterwarnings("ignore")
    w, f = _quadratic()
    opt = optim.build(name, [w], **KWARGS.get(name, {}))
    second = optim.is_second_order(name)
    start = float(f())

    def closure() -> torch.Tensor:
        with torch.enable_grad():
            opt.zero_grad()
            loss = f()
            loss.backward(create_graph=second)
        return loss

    for _ in range(STEPS.get(name, 25)):
        if name == "alig":  # its closure only reports the loss value
            loss = closure()
            opt.step(lambda loss=loss: float(loss))
        elif optim.needs_closure(name):
            opt.step(closure)
        else:
            closure()
            opt.step()
    assert float(f()) < start


def test_our_names_decrease_a_quadratic() -> None:
    # sso: targets z = theta itself, loss l(z) = 0.5 ||z - c||^2 (a quadratic in theta)
    w, f = _quadratic()
    c = w.detach() + torch.randn(4, 4)
    opt = optim.build(
        "sso", [w], model_fn=lambda _: w, loss_fn=lambda z, _: 0.5 * ((z - c) ** 2).sum(), eta=0.5, num_examples=1
    )
    start = 0.5 * float(((w - c) ** 2).sum())
    for _ in range(3):
        opt.step((None, None))
    assert 0.5 * float(((w - c) ** 2).sum()) < start
    # tpsgd: a single Linear layer under MSE is least squares, a quadratic in its weights
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(64, 4), torch.randn(64, 3)
    tp = optim.build("tpsgd", model, task="regression")
    before = float(F.mse_loss(model(x), y))
    for _ in range(10):
        tp.step(x, y)
    assert float(F.mse_loss(model(x), y)) < before


def test_names_resolve_ours_first_and_the_other_sso_qualified() -> None:
    names = optim.available()
    for n in ("adam", "adamw", "sgd", "rmsprop", "lion", "diffgrad", "adamp", "adahessian", "sophiah", "sso", "tpsgd"):
        assert n in names
    assert optim.resolve("sso")[1] is SSO
    assert optim.resolve("adam")[1] is torch.optim.Adam
    assert optim.resolve("pytorch_optimizer:sso")[0] == "pytorch_optimizer:spectralsphere"
    assert optim.resolve("pytorch_optimizer:lion")[1] is optim.resolve("lion")[1]
    assert optim.resolve("torch:adam")[1] is torch.optim.Adam
    assert "pytorch_optimizer:sso" in optim.available(qualified=True)


def test_unknown_name_lists_available_closest_first() -> None:
    with pytest.raises(optim.OptimizerNameError) as err:
        optim.build("lino", [nn.Parameter(torch.zeros(2))])
    msg = str(err.value)
    assert "closest: lion" in msg and "adam" in msg and "sso" in msg
    assert isinstance(err.value, ValueError)


def test_second_order_flag_and_misuse_error() -> None:
    assert optim.is_second_order("adahessian") and optim.is_second_order("sophiah")
    assert not optim.is_second_order("adam") and not optim.is_second_order("sso")
    for name in ("adahessian", "sophiah"):
        w, f = _quadratic()
        opt = optim.build(name, [w])
        f().backward()  # no create_graph
        before = w.detach().clone()
        with pytest.raises(optim.SecondOrderError, match="create_graph=True"):
            opt.step()
        assert torch.equal(w.detach(), before)  # no step was taken


def test_bad_setting_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="num_iterations"):
        optim.build("ranger21", [nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="'adam'"):
        optim.build("adam", [nn.Parameter(torch.zeros(2))], nonsense=1)


# -- SSO ------------------------------------------------------------------------------------------------
def _logreg() -> tuple[torch.Tensor, torch.Tensor, nn.Linear]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (torch.rand(200, generator=g) < torch.sigmoid(x @ torch.randn(5, generator=g))).float()
    torch.manual_seed(0)
    return x, y, nn.Linear(5, 1)


@pytest.mark.parametrize("divergence", ["euclidean", "kl"])
def test_sso_surrogate_upper_bounds_the_loss_and_inner_loop_decreases_it(divergence: str) -> None:
    x, y, model = _logreg()
    # Euclidean: BCE is (1/4)-smooth per example, so eta <= 4 makes l(z_t) + g_t a global upper bound.
    # KL: BCE's Bregman divergence *is* the Bernoulli KL, so eta <= 1 does (eta = 1: exact).
    eta = 2.0 if divergence == "euclidean" else 1.0
    with torch.no_grad():
        z_t = model(x).squeeze(-1)
    zl = z_t.clone().requires_grad_(True)
    loss_t = F.binary_cross_entropy_with_logits(zl, y)
    (grad,) = torch.autograd.grad(loss_t, zl)
    # the bound at random parameters far and near
    for scale in (0.01, 0.3, 3.0):
        for _ in range(5):
            with torch.no_grad():
                z = z_t + scale * torch.randn_like(z_t) * 5
                bound = float(loss_t) + float(surrogate_value(z, z_t, grad, eta, divergence))
                assert float(F.binary_cross_entropy_with_logits(z, y)) <= bound + 1e-6
    # the inner loop decreases the surrogate monotonically and the loss follows
    params = list(model.parameters())

    def objective() -> torch.Tensor:
        return surrogate_value(model(x).squeeze(-1), z_t, grad, eta, divergence)

    values = [float(objective().detach())]
    for _ in range(5):
        armijo_descent(params, objective, 1, ArmijoConfig())
        values.append(float(objective().detach()))
    assert all(b <= a + 1e-7 for a, b in zip(values, values[1:], strict=False)) and values[-1] < values[0]
    with torch.no_grad():
        assert float(F.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)) < float(loss_t)


def test_sso_trains_logistic_regression_one_gradient_per_step() -> None:
    x, y, model = _logreg()
    opt = SSO(model.parameters(), lambda inp: model(inp).squeeze(-1), "bce", inner_steps=5)
    losses = [float(opt.step((x, y))) for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0]
    assert opt.counters["grad_evals"] == 10 and opt.counters["inner_steps"] > 10
    for schedule in ("sqrt", "line_search"):
        x, y, model = _logreg()
        opt = SSO(model.parameters(), lambda inp, m=model: m(inp).squeeze(-1), "bce", eta_schedule=schedule)
        first = float(opt.step((x, y)))
        for _ in range(4):
            last = float(opt.step((x, y)))
        assert last < first


def test_sso_with_a_registry_inner_optimiser_and_kl() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(120, 4), torch.randint(0, 3, (120,))
    model = nn.Linear(4, 3)
    params = list(model.parameters())
    first = None
    for _ in range(5):
        stats = sso_step(params, lambda: model(x), lambda z: F.cross_entropy(z, y), eta=1.5, divergence="kl",
                         inner="adam", inner_kwargs={"lr": 0.05}, inner_steps=5)
        first = first if first is not None else stats.loss
    assert stats.loss < first and stats.surrogate_end < stats.surrogate_start


def test_fma_policy_update_improves_advantage_weighted_likelihood() -> None:
    torch.manual_seed(0)
    policy = nn.Linear(3, 2)
    log_std = nn.Parameter(torch.zeros(2))
    obs = torch.randn(256, 3)

    def dist(o: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Normal(policy(o), log_std.exp()), 1)

    with torch.no_grad():
        actions = dist(obs).sample()
    adv = (actions[:, 0] > 0).float() * 2 - 1  # reward pushing action 0 up
    stats = fma_policy_update([*policy.parameters(), log_std], dist, obs, actions, adv, eta=0.5, inner_steps=5)
    assert stats.objective_end > stats.objective_start == 0.0 and 0 < stats.kl < 2.0
    sample = fma_policy_update([*policy.parameters(), log_std], dist, obs, actions, adv, kl="sample", inner_steps=2)
    assert sample.objective_end >= sample.objective_start


# -- tpSGD ----------------------------------------------------------------------------------------------
def _blobs(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    return centres[y] + torch.randn(n, 4, generator=g), y


def test_tpsgd_builds_no_graph_across_layers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    tp = TPSGD(model)
    seen: list[bool] = []
    for m in model:
        if isinstance(m, nn.Linear):
            m.register_forward_pre_hook(
                lambda _m, args: seen.append(args[0].requires_grad or args[0].grad_fn is not None)
            )
    x, y = _blobs(64)
    with SavedTensorMeter(exclude=model.parameters()) as meter:
        tp.step(x, y)
    assert seen == [False, False, False]  # every layer's input is detached
    assert meter.current_bytes == 0  # every local graph was freed
    # at most one layer's tensors were held at once: input + tanh output of the widest block
    one_layer = 64 * 32 * 4 * 2
    assert 0 < meter.peak_bytes <= one_layer
    with SavedTensorMeter(exclude=model.parameters()) as bp:
        F.cross_entropy(model(x), y).backward()
    assert bp.peak_bytes > meter.peak_bytes


def test_tpsgd_learns_a_separable_problem_classification_and_regression() -> None:
    x, y = _blobs(300)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))
    first_layer = model[0].weight.detach().clone()
    tp = TPSGD(model)
    for _ in range(30):
        for i in range(0, 300, 50):
            tp.step(x[i : i + 50], y[i : i + 50])
    assert (tp.forward(x).argmax(-1) == y).float().mean() > 0.95
    assert not torch.equal(first_layer, model[0].weight)  # hidden layers learn from their projections
    # regression with the DRTP loss
    torch.manual_seed(0)
    target = F.one_hot(y, 3).float() * 2 - 1
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 3))
    tp = TPSGD(model, task="regression", hidden_loss="drtp")
    before = float(F.mse_loss(tp.forward(x), target))
    for _ in range(30):
        for i in range(0, 300, 50):
            tp.step(x[i : i + 50], target[i : i + 50])
    assert float(F.mse_loss(tp.forward(x), target)) < 0.5 * before


def test_tpsgd_gru_trains_per_time_step() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (128,), generator=g)
    x = torch.randn(128, 6, 3, generator=g) * 0.5
    x[:, :, 0] += (y.float() * 2 - 1).unsqueeze(1)  # the class shows at every step
    torch.manual_seed(0)
    model = nn.Sequential(nn.GRU(3, 16, batch_first=True), nn.Linear(16, 2))
    tp = TPSGD(model)
    for _ in range(40):
        tp.step(x, y)
    out = sequential_forward(model, x)  # [B, T, 2]
    assert out.shape == (128, 6, 2)
    assert (out[:, -1].argmax(-1) == y).float().mean() > 0.9


# -- schedules ------------------------------------------------------------------------------------------
def _lrs(sched: torch.optim.lr_scheduler.LRScheduler, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)


def test_refined_schedule_equals_linear_decay_for_constant_norms() -> None:
    t = 50
    for kind in ("sgd", "adam"):
        got = _lrs(refined(_opt(), [2.5] * (t + 1), kind=kind), t + 1)
        assert got == pytest.approx(_lrs(linear_decay(_opt(), t), t + 1))
    # a rising norm sequence gives a warm-up shape and the last multiplier 0
    s = refined_multipliers(torch.linspace(5.0, 1.0, 100))
    assert s[0] < 1.0 and s[-1] == 0.0 and float(s.max()) == 1.0


def test_warmup_poly_shape() -> None:
    lrs = _lrs(warmup_poly(_opt(), total_steps=20, warmup_steps=5, power=2.0), 21)
    assert lrs[0] == pytest.approx(0.02) and lrs[4] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.0)
    assert all(b <= a for a, b in zip(lrs[4:], lrs[5:], strict=False))


# -- the benchmark command ------------------------------------------------------------------------------
def test_bench_optim_cli_prints_one_json_object_per_suite(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import json

    from marl.cli import main

    plot = tmp_path / "curves.png"
    argv = ["bench", "optim", "--suite", "ppo", "--quick", "--json", "--out-dir", str(tmp_path / "runs")]
    assert main([*argv, "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plot"] == str(plot) and plot.stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["adam_s0", "lion_s0", "sophiah_s0", "sso_s0"]
    assert out["suite"] == "ppo" and set(out["optimizers"]) == {"adam", "lion", "sophiah", "sso"}
    for name, result in out["optimizers"].items():
        # The suite's figures are each run's own end-of-run evaluation (one seed in --quick), not another's.
        ev = json.loads((tmp_path / "runs" / f"{name}_s0" / "eval.json").read_text())
        assert result["eval_success_by_seed"] == [ev["success_rate"]] == [result["eval_success_mean"]], name
        assert result["eval_return_mean"] == pytest.approx(ev["episode_return"]), name
        assert result["success_curves"] and len(result["success_curves"][0]) == 2  # 2 updates of the tiny budget
    with pytest.raises(SystemExit):
        main(["bench", "optim", "--suite", "ppo", "--seeds", "0,one"])
    assert "--seeds takes comma-separated integers" in capsys.readouterr().err
    assert main(argv) == 0  # finished runs are read back, not trained again
    again = json.loads(capsys.readouterr().out)
    assert again["optimizers"]["sso"]["wall_s_mean"] == out["optimizers"]["sso"]["wall_s_mean"]
