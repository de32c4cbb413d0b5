"""Self-describing checkpoints (agents.load_policy needs no environment), the contract module, the import plan."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agents
import quadspec
from agents import PolicyConfig, make_policy_from_config
from agents.checkpoint import FORMAT, CheckpointError, load_policy, load_policy_checkpoint, policy_record
from envs.swarm import QuadSwarmVecEnv
from marl.checkpoint import load_checkpoint, save_checkpoint
from marl.train_config import resolve_config
from marl.trainer import train

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "env.num_drones=2", "env.num_neighbors=1", "env.episode_seconds=0.5", "env.grace_seconds=0.1",
    "agent.name=mlp", "train.num_envs=8", "train.rollout_steps=8", "train.epochs=1", "train.minibatches=1",
    "train.threads=1", "train.total_agent_steps=128", "logging.tensorboard=false", "logging.progress=false",
]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def _policy(name: str = "attention", **kwargs) -> agents.ActorCritic:
    torch.manual_seed(0)
    return make_policy_from_config(PolicyConfig(name=name, **kwargs), quadspec.obs_layout(2), 4)


def test_contract_module_is_dependency_free_and_agents_import_no_simulator():
    # quadspec: no torch, no pydantic; agents: nothing of envs/ (a fresh interpreter sees what is imported).
    res = _run("import sys, quadspec; bad = [m for m in ('torch', 'pydantic', 'numpy', 'envs', 'agents') "
               "if m in sys.modules]; print(bad); assert not bad")
    assert res.returncode == 0, res.stdout + res.stderr
    res = _run("import sys, agents, agents.checkpoint, agents.pid; "
               "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('envs', 'marl', 'optim', 'deploy')); "
               "print(bad); assert not bad")
    assert res.returncode == 0, res.stdout + res.stderr


def test_contract_is_what_the_simulator_flies():
    from envs.config import DynamicsConfig, make_config
    from envs.dynamics import PROP_CCW, PROP_SIGNS_XY

    dyn = DynamicsConfig()
    v = quadspec.CRAZYFLIE
    assert (dyn.mass, dyn.arm, tuple(dyn.inertia), dyn.thrust_to_weight, dyn.torque_to_thrust, dyn.gravity) == (
        v.mass, v.arm, v.inertia, v.thrust_to_weight, v.torque_to_thrust, v.gravity)
    assert dyn.control_dt == pytest.approx(quadspec.CONTROL_DT)
    assert dyn.max_thrust == pytest.approx(v.max_thrust)
    assert (PROP_SIGNS_XY, PROP_CCW) == (quadspec.PROP_SIGNS_XY, quadspec.PROP_CCW)
    env = QuadSwarmVecEnv(make_config(num_drones=3, num_neighbors=2, scenario="o_random"), num_envs=2)
    obs = env.reset(seed=0)
    assert env.spec == quadspec.obs_layout(2) and obs.shape[-1] == env.spec.dim == 19 + 2 * 6 + 9
    state = env.get_state([0])
    # The self segment's fields sit where the contract says.
    torch.testing.assert_close(obs[0, :, quadspec.POS_ERROR], state.pos[0] - state.goals[0])
    torch.testing.assert_close(obs[0, :, quadspec.HEIGHT], state.pos[0][:, 2:3])
    assert quadspec.layout_from_dim(40) == quadspec.obs_layout(2)
    with pytest.raises(ValueError, match="19 \\+ 6 K \\+ 9"):
        quadspec.layout_from_dim(30)
    assert quadspec.ObsLayout.from_dict(quadspec.obs_layout(3, leaders=2).to_dict()).self_dim == 20
    # One layout record: the simulator's ObsSpec, agents' ObsLayout / Layout and the flat PettingZoo layout.
    from agents.layers import Layout
    from envs.observations import ObsSpec
    from envs.predator_prey_v0 import parallel_env

    assert ObsSpec is Layout is agents.ObsLayout is quadspec.ObsLayout
    assert parallel_env().obs_layout == quadspec.flat_layout(parallel_env().obs_layout.dim)


@pytest.mark.parametrize("name,kwargs", [("attention", {"critic": "central"}), ("commformer", {"sparsity": 0.5}),
                                         ("attention", {"close_range": 1.5}),
                                         ("mlp", {"num_actions": 5})])
def test_policy_rebuilt_from_its_checkpoint_alone(tmp_path, monkeypatch, name, kwargs):
    policy = _policy(name, **kwargs)
    env = {"num_drones": 4, "num_neighbors": 2}
    save_checkpoint(tmp_path / "c.pt", {"config": {"env": env}}, policy=policy)

    def no_env(*args, **kwargs):
        raise AssertionError("loading a policy built an environment")

    monkeypatch.setattr(QuadSwarmVecEnv, "__init__", no_env)
    loaded = load_policy_checkpoint(tmp_path / "c.pt")
    assert loaded.env == env and not loaded.policy.training
    obs = torch.randn(3, 4, quadspec.obs_layout(2).dim)
    with torch.no_grad():
        (dist_a, value_a), (dist_b, value_b) = policy.eval()(obs), loaded.policy(obs)
    torch.testing.assert_close(value_a, value_b)
    field = "logits" if "num_actions" in kwargs else "mean"
    torch.testing.assert_close(getattr(dist_a, field), getattr(dist_b, field))
    assert loaded.policy.config == policy.config and loaded.policy.num_agents == 4
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert ckpt["format"] == FORMAT and ckpt["policy"] == policy_record(policy, env)


def test_previous_format_and_broken_records_are_refused_with_one_line(tmp_path):
    torch.save({"format": 1, "model": {}, "config": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="format 1") as err:
        load_policy(tmp_path / "old.pt")
    assert "\n" not in str(err.value) and "retrain" in str(err.value)
    with pytest.raises(CheckpointError, match="format 1"):
        load_checkpoint(tmp_path / "old.pt")  # a resume refuses it the same way
    policy = _policy()
    save_checkpoint(tmp_path / "c.pt", {}, policy=policy)
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    ckpt["policy"]["layout"]["self_dim"] = 20  # the weights were made for a self segment of 19
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not fit its record"):
        load_policy(tmp_path / "bad.pt")
    (tmp_path / "torn.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_policy(tmp_path / "torn.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "missing")


def test_trained_run_is_loaded_by_agents_and_deploy_without_marl(tmp_path):
    train(resolve_config("quickstart", TINY), tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["policy"]["layout"] == quadspec.obs_layout(1).to_dict() and ckpt["policy"]["num_agents"] == 2
    # deploy's loader in a fresh interpreter: the policy and env config come back, and no marl module is imported.
    run = str(tmp_path / "run")
    res = _run(f"import sys; from deploy.calibration import load_actor; actor, cfg = load_actor({run!r}); "
               "import torch; assert cfg.num_drones == 2 and actor(torch.zeros(1, 2, 34)).shape == (1, 2, 4); "
               "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'marl'); print(bad); assert not bad")
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_contracts_hold_and_catch_a_deploy_to_marl_import_and_a_marl_cycle(tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "import-linter is not installed next to the interpreter (requirements-dev.txt)"
    config = ROOT / ".importlinter"

    def lint_imports(tree: Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(lint), "--config", str(config), "--no-cache"], cwd=tree,
                              capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})

    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    # The same contracts over a copy of the tree with one import against the plan added must fail.
    for path, line, broken in (
        ("deploy/calibration.py", "from marl.evaluate import evaluate", "deploy/ never imports marl/ BROKEN"),
        ("marl/collector.py", "from marl.trainer import Trainer",
         "No import cycles among marl/'s modules and subpackages BROKEN"),
    ):
        tree = tmp_path / path.replace("/", "_")
        for pkg in ("quadspec", "envs", "agents", "optim", "marl", "deploy"):
            shutil.copytree(ROOT / pkg, tree / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        bad = tree / path
        bad.write_text(bad.read_text() + f"\n\ndef _bad():\n    {line}  # noqa\n")
        res = lint_imports(tree)
        assert res.returncode != 0 and broken in res.stdout, res.stdout[-3000:]
