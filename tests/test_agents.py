"""Learned policies (agents.make_policy): shapes, distributions, symmetry, sizes, init, gradients, config."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch.distributions import Normal

from agents import POLICIES, PolicyConfig, count_parameters, make_policy, make_policy_from_config
from agents.layers import Layout, MultiHeadAttention, layout_from_dim
from envs.observations import obs_spec

CRITICS = ("local", "central")


def _obs(b: int, m: int, k: int, seed: int = 0) -> torch.Tensor:
    """Observations at roughly the simulator's scale (metres, m/s, SDF in metres)."""
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(b, m, Layout(num_neighbors=k).dim, generator=g)


def _policy(name: str, k: int, critic: str = "local", m: int = 4, **kwargs):
    torch.manual_seed(0)
    return make_policy(name, obs_spec(k), m, critic=critic, **kwargs)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("k", [0, 2])
def test_shapes(name: str, critic: str, m: int, k: int):
    policy = _policy(name, k, critic, m)
    obs = _obs(3, m, k)
    dist, value = policy(obs)
    assert isinstance(dist, Normal)
    assert dist.batch_shape == (3, m, 4) and value.shape == (3, m)
    action, logp, v = policy.act(obs)
    assert action.shape == (3, m, 4) and logp.shape == (3, m) and v.shape == (3, m)
    logp2, ent, v2 = policy.evaluate(obs, action)
    assert logp2.shape == ent.shape == v2.shape == (3, m)
    assert torch.isfinite(logp2).all() and torch.isfinite(v2).all()
    assert policy.actor(obs).shape == (3, m, 4)  # the deterministic actor alone, as deploy/ uses it
    critic_calls = []
    hook = policy.critic.register_forward_hook(lambda *_: critic_calls.append(1))
    alone = policy.distribution(obs)  # what a policy-only update (SSO's mirror ascent) re-evaluates
    hook.remove()
    assert not critic_calls and torch.equal(alone.mean, dist.mean) and torch.equal(alone.stddev, dist.stddev)


@pytest.mark.parametrize("name", POLICIES)
def test_log_prob_and_entropy_match_torch_normal(name: str):
    policy = _policy(name, 2)
    obs = _obs(5, 4, 2)
    action = torch.randn(5, 4, 4)
    logp, ent, value = policy.evaluate(obs, action)
    with torch.no_grad():
        mean = policy.actor(obs)
        std = policy.actor.std()
    ref = Normal(mean, std.expand_as(mean))
    torch.testing.assert_close(logp, ref.log_prob(action).sum(-1))
    torch.testing.assert_close(ent, ref.entropy().sum(-1))
    # Entropy is state-independent, equal to that of the initial std.
    expected = 4 * (0.5 * math.log(2 * math.pi * math.e) + PolicyConfig().init_log_std)
    torch.testing.assert_close(ent, torch.full_like(ent, expected))
    _, _, v = policy.act(obs)
    torch.testing.assert_close(v, value)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("critic", CRITICS)
def test_agent_permutation_equivariance(name: str, critic: str):
    policy = _policy(name, 2, critic)
    obs = _obs(3, 4, 2)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        dist, value = policy(obs)
        dist_p, value_p = policy(obs[:, perm])
    torch.testing.assert_close(dist_p.mean, dist.mean[:, perm])
    torch.testing.assert_close(value_p, value[:, perm])


def test_central_critic_sees_the_other_agents_and_local_does_not():
    obs = _obs(1, 4, 2)
    other = obs.clone()
    other[0, 3] += 1.0  # change agent 3 only
    for critic, changes in (("local", False), ("central", True)):
        policy = _policy("attention", 2, critic)
        with torch.no_grad():
            v, v2 = policy(obs)[1], policy(other)[1]
        assert torch.allclose(v[0, :3], v2[0, :3]) != changes
        # Rows are independent environments: the other row's agents never leak in.
        both = torch.cat([obs, _obs(1, 4, 2, seed=1)])
        with torch.no_grad():
            torch.testing.assert_close(policy(both)[1][:1], v)


@pytest.mark.parametrize("name", ["attention", "deepsets"])
def test_neighbour_order_invariance(name: str):
    policy = _policy(name, 3, m=4)
    obs = _obs(2, 4, 3)
    nbr = obs[..., 19 : 19 + 18].reshape(2, 4, 3, 6)
    swapped = obs.clone()
    swapped[..., 19 : 19 + 18] = nbr[:, :, [2, 0, 1]].reshape(2, 4, 18)
    with torch.no_grad():
        torch.testing.assert_close(policy.actor(swapped), policy.actor(obs))


def test_preset_sizes():
    spec = obs_spec(2)
    small = make_policy("attention", spec, 8, preset="deployable")
    large = make_policy("attention", spec, 8, preset="large")
    assert 1_000 < count_parameters(small.actor) < 10_000
    assert count_parameters(large.actor) > 1_000_000
    # Actor and critic are separate networks; the policy holds exactly the two.
    assert count_parameters(small) == count_parameters(small.actor) + count_parameters(small.critic)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("preset", ["deployable", "large"])
def test_initial_actions_near_zero(name: str, preset: str):
    policy = _policy(name, 2, preset=preset)
    with torch.no_grad():
        dist, _ = policy(_obs(64, 4, 2))
    assert dist.mean.abs().max() < 0.05  # a = 0: thrust fraction 0.5, about hover at thrust-to-weight 1.9
    torch.testing.assert_close(dist.stddev, torch.full_like(dist.stddev, 0.4))


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("k", [0, 2])
def test_gradients_reach_every_parameter(name: str, critic: str, k: int):
    policy = _policy(name, k, critic)
    obs = _obs(4, 4, k)
    with torch.no_grad():
        action, old_logp, old_value = policy.act(obs)
    adv = torch.randn(4, 4)
    returns = old_value + torch.randn(4, 4)
    logp, ent, value = policy.evaluate(obs, action + 0.1)
    ratio = (logp - old_logp).exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    loss = -surrogate.mean() + 0.5 * (value - returns).pow(2).mean() - 0.01 * ent.mean()
    loss.backward()
    for pname, p in policy.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        # With a single token (K = 0) the attention weights are constant 1: q and k get zero gradient.
        if k > 0:
            assert p.grad.abs().sum() > 0, pname


def test_unknown_policy_lists_allowed():
    with pytest.raises(ValueError, match="unknown policy 'transformer'; allowed: mlp, attention, deepsets"):
        make_policy("transformer", obs_spec(2), 8)
    with pytest.raises(ValidationError, match="allowed: mlp, attention, deepsets"):
        PolicyConfig(name="transformer")


def test_policy_config_validation():
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        PolicyConfig(name="attention", widht=32)
    with pytest.raises(ValidationError, match="num_heads does not apply to policy 'mlp'"):
        PolicyConfig(name="mlp", num_heads=2)
    with pytest.raises(ValidationError, match="critic"):
        PolicyConfig(critic="global")
    with pytest.raises(ValidationError, match="init_log_std"):
        PolicyConfig(init_log_std=2.0)
    with pytest.raises(ValidationError):
        make_policy("attention", obs_spec(2), 8, preset="huge")
    # What a YAML ``agent:`` section gives: lists for tuples.
    cfg = PolicyConfig.model_validate({"name": "deepsets", "hidden_sizes": [24, 24], "pool": "sum"})
    assert cfg.hidden_sizes == (24, 24)


def test_config_and_keyword_paths_agree():
    cfg = PolicyConfig(name="attention", embed_dim=8, num_heads=2, hidden_sizes=[16], critic="central")
    torch.manual_seed(0)
    a = make_policy_from_config(cfg, obs_spec(2), 4)
    torch.manual_seed(0)
    b = make_policy("attention", obs_spec(2), 4, embed_dim=8, num_heads=2, hidden_sizes=[16], critic="central")
    assert a.config == b.config == cfg
    obs = _obs(2, 4, 2)
    with torch.no_grad():
        torch.testing.assert_close(a(obs)[1], b(obs)[1])
    enc = a.actor.encoder
    assert enc.attention.num_heads == 2 and enc.attention.head_dim == 8  # full-width heads by default
    assert a.actor.mean.in_features == 16


def test_bad_observation_shape_is_named():
    policy = _policy("mlp", 2)
    with pytest.raises(ValueError, match=r"expected observations \[B, M, 40\]"):
        policy(torch.zeros(4, 40 + 6))
    with pytest.raises(ValueError, match="num_agents"):
        make_policy("mlp", obs_spec(2), 0)


def test_attention_matches_torch_multihead_attention():
    # With head_dim = E // H the hand-written module computes what torch's does.
    torch.manual_seed(0)
    e, h = 8, 2
    ours = MultiHeadAttention(e, h, e // h)
    ref = torch.nn.MultiheadAttention(e, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
        q, kv = torch.randn(5, 1, e), torch.randn(5, 3, e)
        torch.testing.assert_close(ours(q, kv), ref(q, kv, kv, need_weights=False)[0])


def test_layout_inference():
    assert layout_from_dim(28) == Layout(num_neighbors=0)
    assert layout_from_dim(40).num_neighbors == 2
    with pytest.raises(ValueError, match="observation width 30"):
        layout_from_dim(30)
