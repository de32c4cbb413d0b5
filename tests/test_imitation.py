"""Imitation of the PID teacher: BC with SSO and DAgger's aggregation (marl.imitation, the library), and the
tpSGD distillation study (marl.bench.studies.distill, an experiment built on it)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from agents import make_policy
from agents.pid import PIDConfig, PIDController
from envs.observations import obs_spec
from envs.swarm import QuadSwarmVecEnv
from marl.bench.optim import run_suite
from marl.bench.studies.distill import distill_bp, distill_tpsgd
from marl.imitation import (
    ImitationData,
    behaviour_cloning,
    dagger,
    fit,
    imitation_loss,
    make_student,
    make_teacher,
    quickstart_env,
    record_teacher,
    rollout,
    student_actions,
)
from marl.train_config import PretrainConfig
from optim import OptimizerNameError


@pytest.fixture(scope="module")
def env_cfg():
    return quickstart_env()


@pytest.fixture(scope="module")
def data(env_cfg) -> ImitationData:
    # 2 swarms x 150 control steps (the take-off and transit: the largest actions), every 3rd step.
    return record_teacher(env_cfg, num_envs=2, steps=150, record_every=3, seed=0)


def _stateless_pid(env_cfg) -> PIDController:
    """The PID with its integral gains at zero: its action is a function of the observation alone."""
    return PIDController(PIDConfig.from_dynamics(env_cfg.dynamics, ki_xy=0.0, ki_z=0.0))


def test_teacher_data_shapes_and_reproducibility(env_cfg, data: ImitationData) -> None:
    assert data.obs.shape == (100, env_cfg.num_drones, 40) and data.actions.shape == (100, env_cfg.num_drones, 4)
    assert data.actions.abs().max() <= 1.0
    again = record_teacher(env_cfg, num_envs=2, steps=150, record_every=3, seed=0)
    assert torch.equal(again.obs, data.obs) and torch.equal(again.actions, data.actions)
    other = record_teacher(env_cfg, num_envs=2, steps=150, record_every=3, seed=1)
    assert not torch.equal(other.obs, data.obs)


def test_bc_with_sso_lowers_imitation_loss(env_cfg, data: ImitationData) -> None:
    student = make_student("attention", env_cfg, seed=0)  # the deployable attention policy
    critic_before = [p.clone() for p in student.critic.parameters()]
    l0 = imitation_loss(student, data)
    res = fit(student, data, optimizer="sso", steps=30, batch=16, eval_every=10, seed=0)
    assert res.optimizer == "sso" and res.grad_evals == 30  # one expensive gradient per minibatch
    assert res.initial_loss == pytest.approx(l0) and l0 > 0.04
    assert res.final_loss == pytest.approx(imitation_loss(student, data))
    assert res.final_loss < 0.03 and res.final_loss < 0.6 * l0
    # only the action mean is fitted: the critic is untouched
    assert all(torch.equal(a, b) for a, b in zip(critic_before, student.critic.parameters(), strict=True))
    # same seed, same result
    twin = make_student("attention", env_cfg, seed=0)
    assert fit(twin, data, optimizer="sso", steps=30, batch=16, eval_every=10, seed=0).curve == res.curve


def test_fit_with_a_registry_optimizer(env_cfg, data: ImitationData) -> None:
    student = make_student("mlp", env_cfg, seed=0)
    res = fit(student, data, optimizer="adam", lr=3e-3, steps=40, batch=16, eval_data=data, eval_every=20)
    assert res.grad_evals == 40 and [e for e, _ in res.curve] == [0, 20, 40]
    assert res.final_eval_loss == pytest.approx(res.final_loss)  # same data for both here
    assert res.final_loss < 0.8 * res.initial_loss
    # unscored, the same minibatches train the same weights; no pass over the whole data is made
    trained = [p.detach().clone() for p in student.parameters()]
    twin = make_student("mlp", env_cfg, seed=0)
    unscored = fit(twin, data, optimizer="adam", lr=3e-3, steps=40, batch=16, eval_data=data, score=False)
    assert unscored.curve == [] and unscored.eval_curve == [] and math.isnan(unscored.final_loss)
    assert all(torch.equal(a, b) for a, b in zip(trained, twin.parameters(), strict=True))


def test_sample_weights_steer_the_fit_to_the_weighted_samples(env_cfg, data: ImitationData) -> None:
    # Drone 0's labels are replaced by garbage with weight 0: the weighted fit follows the others' labels
    # (the same gradient steps as on the clean data with drone 0's error masked out), the plain fit does not.
    bad = ImitationData(data.obs, data.actions.clone())
    bad.actions[:, 0] = 1.0
    mask = lambda obs: (torch.arange(obs.shape[1]) > 0).float().expand(obs.shape[:2])  # noqa: E731
    kw = {"optimizer": "adam", "lr": 3e-3, "steps": 40, "batch": 16, "seed": 0}
    weighted, clean, plain = (make_student("mlp", env_cfg, seed=0) for _ in range(3))
    fit(weighted, bad, sample_weight=mask, **kw)
    fit(clean, data, sample_weight=mask, **kw)
    fit(plain, bad, **kw)
    assert all(torch.equal(a, b) for a, b in zip(weighted.parameters(), clean.parameters(), strict=True))
    with torch.no_grad():
        err = lambda s: (s.actor(data.obs)[:, 1:] - data.actions[:, 1:]).square().mean().item()  # noqa: E731
    assert err(weighted) < err(plain)
    with pytest.raises(ValueError, match="gradient optimiser"):
        fit(make_student("mlp", env_cfg), data, optimizer="sso", sample_weight=mask)


def test_lr_decay_shortens_the_steps(env_cfg, data: ImitationData) -> None:
    # SGD on the same minibatches: with the learning rate falling linearly to 0 the weights travel less far
    # than with a constant one (0.8 of it here); a one-step fit starts at the full rate either way. SSO and
    # tpSGD have no learning-rate schedule, so the flag is refused for them.
    kw = {"optimizer": "sgd", "lr": 0.05, "batch": 16, "seed": 0}

    def travel(steps: int, lr_decay: bool) -> float:
        student = make_student("mlp", env_cfg, seed=0)
        start = torch.cat([p.detach().flatten().clone() for p in student.parameters()])
        fit(student, data, steps=steps, lr_decay=lr_decay, **kw)
        return float((torch.cat([p.detach().flatten() for p in student.parameters()]) - start).norm())

    assert travel(1, True) == travel(1, False) > 0
    assert 0 < travel(20, True) < 0.9 * travel(20, False)
    with pytest.raises(ValueError, match="lr_decay need a gradient optimiser"):
        fit(make_student("mlp", env_cfg), data, optimizer="sso", lr_decay=True)
    with pytest.raises(ValueError, match="pretrain.lr_decay needs a gradient optimiser"):
        PretrainConfig(optimizer="sso", lr_decay=True)


def test_dagger_hazard_weight_needs_a_controller_teacher(env_cfg) -> None:
    student = make_student("attention", env_cfg)
    with pytest.raises(ValueError, match="hazard_weight"):
        dagger(student, env_cfg, lambda obs: torch.zeros(*obs.shape[:2], 4), iterations=0, hazard_weight=1.0)
    res = dagger(student, env_cfg, "pid_avoid", iterations=0, num_envs=2, rollout_steps=20, fit_steps=2,
                 optimizer="adam", hazard_weight=5.0)
    assert len(res.iterations) == 1 and res.iterations[0].fit_loss > 0


def test_hazard_proximity_is_the_avoidance_filters_weight() -> None:
    pid = PIDController(PIDConfig(avoid=True))
    c = pid.cfg
    obs = torch.zeros(1, 3, 19 + 6 + 9)
    obs[..., -9:] = 5.0  # columns far away
    obs[0, 0, 19:22] = torch.tensor([10.0, 0.0, 0.0])  # neighbour far away
    obs[0, 1, 19:22] = torch.tensor([2 * c.arm + c.neighbour_safe, 0.0, 0.0])  # at the safe gap
    obs[0, 2, 19:22] = torch.tensor([10.0, 0.0, 0.0])
    obs[0, 2, -9 + 4] = c.arm + (c.obstacle_range + c.obstacle_safe) / 2  # half-way into a column's range
    assert torch.allclose(pid.hazard_proximity(obs), torch.tensor([[0.0, 1.0, 0.5]]), atol=1e-5)
    assert torch.allclose(pid.neighbour_proximity(obs), torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-5)


def test_teacher_gains_reach_the_controller(env_cfg) -> None:
    # A drone flying at 1 m/s towards a neighbour 0.6 m away (a 0.51 m gap): outside the default avoidance
    # range (0.5 m), inside a widened one (0.8 m), so only the widened teacher turns away.
    obs = torch.zeros(1, 1, 19 + 6 + 9)
    obs[..., 0] = -2.0  # goal 2 m ahead along x
    obs[..., 3] = 1.0
    obs[..., 6:15] = torch.eye(3).flatten()
    obs[..., 19:22] = torch.tensor([0.6, 0.0, 0.0])
    obs[..., -9:] = 5.0  # columns far away
    default = make_teacher("pid_avoid", env_cfg)
    wide = make_teacher("pid_avoid", env_cfg, gains={"neighbour_range": 0.8})
    assert wide.cfg.neighbour_range == 0.8 and wide.cfg.mass == default.cfg.mass == env_cfg.dynamics.mass
    assert torch.equal(default(obs), make_teacher("pid_avoid", env_cfg, gains={})(obs))
    assert (default(obs) - wide(obs)).abs().max() > 0.05
    with pytest.raises(ValueError, match="unknown controller gain 'range'"):
        make_teacher("pid_avoid", env_cfg, gains={"range": 0.8})
    with pytest.raises(ValueError, match="gains are for a controller teacher"):
        make_teacher("zoo:quickstart", env_cfg, gains={"kp_xy": 3.0})


@pytest.mark.parametrize("close_range", [None, 0.6])
def test_student_actions_are_the_policy_mode_without_the_critic(env_cfg, close_range) -> None:
    """The imitation flies the actor's means alone; they must be the actions the policy's mode flies."""
    torch.manual_seed(0)
    policy = make_policy("attention", obs_spec(env_cfg.num_neighbors), env_cfg.num_drones, close_range=close_range)
    obs = QuadSwarmVecEnv(env_cfg, num_envs=3).reset(seed=2)
    obs[0, 0, 19:22] = torch.tensor([0.1, 0.0, 0.0])  # a neighbour inside the near gate, where one is built
    calls = []
    policy.critic.register_forward_hook(lambda *_: calls.append(1))
    got = student_actions(policy, obs)
    assert not calls
    assert torch.equal(got, policy.act(obs, deterministic=True)[0].clamp(-1.0, 1.0)) and calls
    assert got.shape == (3, env_cfg.num_drones, 4)


def test_rollout_records_the_states_the_student_visits(env_cfg) -> None:
    teacher = _stateless_pid(env_cfg)
    student = make_student("attention", env_cfg, seed=3)  # untrained: flies nothing like the teacher
    ro = rollout(env_cfg, teacher, student, beta=0.0, num_envs=2, steps=30, record_every=1, seed=5)
    assert ro.teacher_fraction == 0.0
    # the same simulator, seed and student, stepped by hand, visits exactly the recorded states
    env = QuadSwarmVecEnv(env_cfg, num_envs=2)
    obs, states = env.reset(seed=5), []
    for _ in range(30):
        states.append(obs)
        obs = env.step(student_actions(student, obs))[0]
    assert torch.equal(ro.data.obs, torch.cat(states))
    # ... and they are labelled with the teacher's actions on them
    assert torch.allclose(ro.data.actions, _stateless_pid(env_cfg)(ro.data.obs), atol=1e-6)
    # the teacher flying from the same start visits other states
    assert not torch.allclose(record_teacher(env_cfg, teacher, num_envs=2, steps=30, record_every=1, seed=5).obs,
                              ro.data.obs)
    mixed = rollout(env_cfg, teacher, student, beta=0.5, num_envs=4, steps=40, seed=5)
    assert 0.3 < mixed.teacher_fraction < 0.7


def test_action_noise_strays_the_flight_but_labels_stay_the_teachers(env_cfg) -> None:
    teacher = _stateless_pid(env_cfg)
    kw = {"num_envs": 2, "steps": 40, "record_every": 1, "seed": 5}
    clean = rollout(env_cfg, teacher, **kw).data
    assert torch.equal(rollout(env_cfg, teacher, action_noise=0.0, **kw).data.obs, clean.obs)  # 0 = no noise
    noisy = rollout(env_cfg, teacher, action_noise=0.3, **kw).data
    assert torch.equal(noisy.obs[:2], clean.obs[:2])  # same start ...
    assert (noisy.obs[-2:] - clean.obs[-2:]).abs().max() > 0.05  # ... the noise took the flight elsewhere
    # the labels are the teacher's clean actions on the states flown, not the executed (noisy) ones
    assert torch.allclose(noisy.actions, _stateless_pid(env_cfg)(noisy.obs), atol=1e-6)
    assert torch.equal(rollout(env_cfg, teacher, action_noise=0.3, **kw).data.obs, noisy.obs)  # seeded
    with pytest.raises(ValueError, match="action_noise"):
        rollout(env_cfg, teacher, action_noise=-0.1, **kw)


def test_focus_rounds_add_only_the_students_near_misses(env_cfg) -> None:
    teacher = PIDController(PIDConfig.from_dynamics(env_cfg.dynamics, avoid=True, ki_xy=0.0, ki_z=0.0))
    # seed 13: its near-miss round (seed 13 + 100 + 1) starts drones within 0.5 m of each other; most seeds of
    # this 4-drone open room do not, and keep nothing
    kw = {"iterations": 1, "beta0": 0.0, "optimizer": "adam", "num_envs": 2, "rollout_steps": 100, "record_every": 3,
          "fit_steps": 2, "batch": 8, "seed": 13}
    plain = dagger(make_student("attention", env_cfg, seed=0), env_cfg, teacher, **kw)
    focused = dagger(make_student("attention", env_cfg, seed=0), env_cfg, teacher, focus_envs=8,
                     focus_threshold=0.1, **kw)
    base = plain.iterations[1].dataset_rows
    assert torch.equal(focused.data.obs[:base], plain.data.obs)  # the same DAgger rounds ...
    extra = focused.data.obs[base:]  # ... then every step of 8 student-only swarms, near-misses only
    assert 0 < len(extra) == focused.iterations[1].new_rows - plain.iterations[1].new_rows < 8 * 100
    assert bool((teacher.neighbour_proximity(extra).amax(-1) >= 0.1).all())
    assert torch.allclose(focused.data.actions[base:], teacher(extra), atol=1e-6)  # teacher's labels
    with pytest.raises(ValueError, match="focus_envs"):
        dagger(make_student("attention", env_cfg), env_cfg, lambda obs: torch.zeros(*obs.shape[:2], 4),
               iterations=0, focus_envs=4)


def test_dagger_aggregates_student_states_labelled_by_the_teacher(env_cfg) -> None:
    teacher = _stateless_pid(env_cfg)
    student = make_student("attention", env_cfg, seed=0)
    res = dagger(student, env_cfg, teacher, iterations=2, beta0=0.0, optimizer="adam", lr=1e-3, num_envs=2,
                 rollout_steps=60, record_every=3, fit_steps=3, batch=8, seed=0)
    rows = 2 * 20  # 2 swarms x 60 steps / 3
    assert [it.dataset_rows for it in res.iterations] == [rows, 2 * rows, 3 * rows]
    assert [it.new_rows for it in res.iterations] == [rows] * 3 and len(res.data) == 3 * rows
    assert [it.beta for it in res.iterations] == [1.0, 0.0, 0.0]
    assert [it.teacher_fraction for it in res.iterations] == [1.0, 0.0, 0.0]
    # iteration 0 is the teacher's own data; later rows are states the student flew to
    bc = record_teacher(env_cfg, teacher, num_envs=2, steps=60, record_every=3, seed=0)
    assert torch.equal(res.data.obs[:rows], bc.obs)
    teacher_flown = record_teacher(env_cfg, teacher, num_envs=2, steps=60, record_every=3, seed=1)
    assert torch.equal(res.data.obs[rows : rows + 2], teacher_flown.obs[:2])  # same start ...
    assert not torch.allclose(res.data.obs[rows : 2 * rows], teacher_flown.obs)  # ... different flight
    # every aggregated state carries the teacher's action on it
    assert torch.allclose(res.data.actions, _stateless_pid(env_cfg)(res.data.obs), atol=1e-6)


def test_tpsgd_distillation_is_layer_local_and_reduces_the_action_mse(data: ImitationData) -> None:
    train, test = data.split(0.3, seed=0)
    seen: dict[str, list[bool]] = {"bp": [], "tpsgd": []}
    method = "bp"

    def hook(module: nn.Module, args: tuple) -> None:
        if isinstance(module, nn.Linear) and torch.is_grad_enabled():
            seen[method].append(args[0].grad_fn is not None)  # input carries a graph from an earlier layer

    handle = nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        kw = {"hidden": (32, 32, 32), "epochs": 6, "batch": 50, "lr": 0.05, "seed": 0}
        bp = distill_bp(train, test, **kw)
        method = "tpsgd"
        tp = distill_tpsgd(train, test, **kw)
    finally:
        handle.remove()
    assert seen["tpsgd"] and not any(seen["tpsgd"])  # no Linear ever saw an input with a graph behind it
    assert any(seen["bp"])  # (the check does see back-propagation's graph through the layers)
    assert tp.initial_mse == pytest.approx(bp.initial_mse)  # same initial student
    assert bp.final_mse < 0.8 * bp.initial_mse
    # tpSGD's held-out curve is noisy at lr 0.05 on these 100 rows (measured: 0.017 0.012 0.025 0.015 0.014
    # 0.017 from 0.018): it must get well below the start within the epochs, not end at its best.
    assert min(tp.test_curve) < 0.8 * tp.initial_mse
    assert tp.projection_bytes == 3 * 4 * 32 * 4  # three fixed [4, 32] float32 projections
    assert tp.peak_bytes - tp.projection_bytes < bp.peak_bytes  # one layer's activations, not three
    # the student predicts actions in action units
    x, y = test.flat()
    with torch.no_grad():
        assert float(((tp.student(x) - y) ** 2).mean()) == pytest.approx(tp.final_mse, rel=1e-5)


def test_bad_input_gives_clear_errors(env_cfg, data: ImitationData) -> None:
    student = make_student("attention", env_cfg, seed=0)
    with pytest.raises(OptimizerNameError, match=r"unknown optimiser 'adamm'.*closest: adam"):
        fit(student, data, optimizer="adamm")
    # checked before anything is rolled out
    with pytest.raises(OptimizerNameError, match="'ssso'"):
        behaviour_cloning(student, env_cfg, optimizer="ssso")
    with pytest.raises(OptimizerNameError, match="'nope'"):
        dagger(student, env_cfg, optimizer="nope")
    with pytest.raises(OptimizerNameError):
        distill_bp(data, optimizer="sgdd")
    with pytest.raises(ValueError, match="tpsgd"):
        fit(student, data, optimizer="tpsgd")
    with pytest.raises(ValueError, match="unknown teacher 'lqr'"):
        make_teacher("lqr")
    with pytest.raises(ValueError, match="needs a student"):
        rollout(env_cfg, "pid", beta=0.5)
    with pytest.raises(ValueError, match="actions"):
        ImitationData(torch.zeros(3, 4, 40), torch.zeros(3, 4, 2))


def test_bench_optim_quick_suites_report_the_imitation_parts() -> None:
    sso = run_suite("sso", quick=True)
    for key in ("sso_grad_evals_to_target", "sgd_grad_evals_to_target", "adam_grad_evals_to_target",
                "bc_sso_grad_evals_to_target", "bc_sgd_grad_evals_to_target", "bc_adam_grad_evals_to_target",
                "bc_sso_adam_inner_grad_evals_to_target", "bc_sgd_final_loss", "bc_adam_final_loss"):
        assert key in sso, key
    assert sso["bc_reference_loss"] < sso["bc_target_loss"] < sso["bc_initial_loss"]
    assert sso["bc_sso_final_loss"] < sso["bc_initial_loss"]
    assert [it["dataset_rows"] for it in sso["bc_dagger"]] == [sso["bc_train_rows"], 2 * sso["bc_train_rows"]]
    tp = run_suite("tpsgd", quick=True)
    for key in ("bp_accuracy", "tpsgd_accuracy", "readout_only_accuracy", "distill_bp_mse", "distill_tpsgd_mse",
                "distill_bp_peak_bytes", "distill_tpsgd_peak_bytes"):
        assert key in tp, key
    # 4 minibatches of 100 rows: back-propagation already lowers the held-out error; tpSGD's learning is
    # checked at a real budget in test_tpsgd_distillation_is_layer_local_and_reduces_the_action_mse.
    assert tp["distill_bp_mse"] < tp["distill_initial_mse"]
    assert 0 < tp["distill_tpsgd_mse"] < 10 * tp["distill_initial_mse"]


def test_the_library_does_not_carry_the_study() -> None:
    import marl.imitation as imitation

    for name in ("distill_bp", "distill_tpsgd", "distill_compare", "StandardisedStudent"):
        assert not hasattr(imitation, name), name

