"""Optimisers inside PPO: registry names, second-order (sophiah) and SSO's functional mirror ascent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marl.optimizers import check_optimizer_name, is_second_order
from marl.train_config import resolve_config
from marl.trainer import Trainer

TINY = ["train.num_envs=16", "train.rollout_steps=16", "train.minibatches=2", "train.epochs=2",
        "logging.tensorboard=false", "logging.progress=false"]


def _trainer(tmp_path, *overrides: str) -> Trainer:
    return Trainer(resolve_config("quickstart", [*TINY, *overrides]), tmp_path)


@pytest.mark.parametrize("name", ["lion", "sophiah", "sso"])
def test_each_optimiser_moves_the_policy_and_stays_finite(tmp_path, name):
    trainer = _trainer(tmp_path, f"optim.name={name}")
    before = [p.detach().clone() for p in trainer.policy.actor.parameters()]
    record = trainer.train_step()
    assert all(np.isfinite(record[k]) for k in ("policy_loss", "value_loss", "approx_kl"))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.actor.parameters(), strict=True))
    assert trainer.learner.optimizers.second_order == (name == "sophiah")


def test_sso_improves_its_surrogate_with_a_small_kl(tmp_path):
    trainer = _trainer(tmp_path, "optim.name=sso", "train.epochs=1")
    record = trainer.train_step()
    # policy_loss is -J after the inner steps: J starts at 0 and Armijo never lets it decrease.
    assert record["policy_loss"] < 0
    assert 0 < record["approx_kl"] < 0.05
    assert record["inner_steps"] >= 1
    opts = trainer.learner.optimizers
    assert opts.policy is None and trainer.learner.optimizer is opts.value


def test_second_order_flag_and_bad_names():
    assert is_second_order("sophiah") and not is_second_order("adam") and not is_second_order("sso")
    check_optimizer_name("sophiah")
    with pytest.raises(ValueError, match="tpsgd"):
        check_optimizer_name("tpsgd")
    with pytest.raises(ValueError, match="available"):
        check_optimizer_name("adamm")
    with pytest.raises(ValueError, match="optim.fma.inner"):
        resolve_config("quickstart", ["optim.fma.inner=nope"])


def test_sophiah_without_the_graph_is_refused():
    """The registry's guard: a second-order step after a plain backward raises instead of a wrong step."""
    import optim

    w = torch.nn.Parameter(torch.ones(3))
    opt = optim.build("sophiah", [w], lr=0.1)
    (w**2).sum().backward()
    with pytest.raises(optim.registry.SecondOrderError, match="create_graph=True"):
        opt.step()
