"""CommFormer (agents.commformer): the learned graph, its straight-through gradients, decentralised
execution, temporal gating, the categorical head and the config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.distributions import Categorical

from agents import PolicyConfig, make_policy
from agents.commformer import CommFormerPolicy, CommGraph, in_degree
from agents.layers import Layout

LAYOUT = Layout(num_neighbors=2)  # the quad-swarm layout: 19 + 2 x 6 + 9 = 40


def _obs(b: int, m: int, seed: int = 0, layout: Layout = LAYOUT) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(b, m, layout.dim, generator=g)


def _policy(m: int = 6, seed: int = 0, **kwargs) -> CommFormerPolicy:
    torch.manual_seed(seed)
    policy = make_policy("commformer", LAYOUT, m, **kwargs)
    with torch.no_grad():  # a trained-looking graph: distinct logits, no ties in the top-k
        policy.actor.graph.edge_logits.copy_(torch.randn(m, m))
    return policy


def _close_all_gates(policy: CommFormerPolicy) -> None:
    with torch.no_grad():
        policy.actor.gate.net[-1].bias.fill_(-50.0)


def test_in_degree():
    assert in_degree(10, 0.4) == 4
    assert in_degree(4, 0.4) == 1
    assert in_degree(3, 0.1) == 1  # at least one message
    assert in_degree(8, 1.0) == 7  # full communication: everyone else, never oneself twice
    assert in_degree(1, 0.4) == 0  # a lone agent hears nobody


@pytest.mark.parametrize("mode", ["exact", "gumbel"])
@pytest.mark.parametrize(("n", "sparsity"), [(2, 0.4), (5, 0.4), (10, 0.4), (10, 0.25), (7, 1.0)])
def test_top_k_keeps_k_in_edges_plus_self_loop(mode: str, n: int, sparsity: float):
    torch.manual_seed(n)
    graph = CommGraph(n, sparsity)
    with torch.no_grad():
        graph.edge_logits.copy_(torch.randn(n, n))
    k = max(int(n * sparsity), 1)
    for _ in range(5):  # Gumbel samples differ, the degree does not
        weights, connected = graph(mode)
        eye = torch.eye(n, dtype=torch.bool)
        assert not connected[eye].any()
        assert (connected.sum(-1) == min(k, n - 1)).all()
        # Straight-through: the forward values are the hard 0/1 graph itself.
        torch.testing.assert_close(weights.detach(), connected.float())
    adjacency = graph.adjacency()
    assert (adjacency.diagonal() == 1).all() and (adjacency.sum(-1) == min(k, n - 1) + 1).all()
    # The exact graph keeps the k largest logits of each row (the diagonal excluded).
    logits = graph.edge_logits.detach().masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    expected = torch.zeros(n, n).scatter_(-1, logits.topk(min(k, n - 1), -1).indices, 1.0)
    torch.testing.assert_close(graph("exact")[1].float(), expected)


@pytest.mark.parametrize("update", [0, 20, 90])  # warm-up (raw logits), Gumbel, post-stable exact
@pytest.mark.parametrize("gating", [False, True])
def test_gradients_reach_the_edge_logits(update: int, gating: bool):
    policy = _policy(6, sparsity=0.4, gating=gating, post_stable=True, warmup_updates=10)
    policy.set_training_progress(update, 100)
    expected_mode = {0: "raw", 20: "gumbel", 90: "exact"}[update]
    assert policy.actor.graph.mode() == expected_mode
    obs = _obs(8, 6)
    action = torch.randn(8, 6, 4)
    logp, entropy, value = policy.evaluate(obs, action)
    loss = -logp.mean() + value.pow(2).mean() + policy.gate_penalty(obs)
    loss.backward()
    grad = policy.actor.graph.edge_logits.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    if gating:
        for name, p in policy.actor.gate.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mask_multiplication_alone_carries_the_gradient():
    # The relation embedding is a second path; without it the softmax x edge-value product must suffice.
    policy = _policy(6, sparsity=0.4)
    policy.set_training_progress(20, 100)
    with torch.no_grad():
        policy.actor.blocks[0].attention.relation.weight[:, 0] = 0.0
    logp, _, _ = policy.evaluate(_obs(8, 6), torch.randn(8, 6, 4))
    logp.mean().backward()
    assert policy.actor.graph.edge_logits.grad.abs().sum() > 0


def test_bilevel_parameter_split():
    policy = _policy(4)
    edges, rest = policy.edge_parameters(), policy.policy_parameters()
    assert len(edges) == 1 and edges[0].shape == (4, 4)
    assert len(edges) + len(rest) == len(list(policy.parameters()))
    assert all(p is not edges[0] for p in rest)


def test_graph_mode_schedule_and_acting():
    policy = _policy(5, warmup_updates=3, post_stable=True, post_ratio=0.5)
    graph = policy.actor.graph
    assert graph.mode() == "raw"  # a fresh policy is in its warm-up
    policy.set_training_progress(3, 10)
    assert graph.mode() == "gumbel"
    policy.set_training_progress(5, 10)
    assert graph.mode() == "exact"
    policy.set_training_progress(4, 10)
    with policy.acting():
        assert graph.mode() == "exact"
    assert graph.mode() == "gumbel"
    policy.eval()
    assert graph.mode() == "exact"
    policy.train()
    # Acting is deterministic in the graph even while training samples Gumbel graphs.
    obs = _obs(4, 5)
    a1 = policy.act(obs, deterministic=True)[0]
    a2 = policy.act(obs, deterministic=True)[0]
    torch.testing.assert_close(a1, a2)
    with torch.no_grad():
        torch.testing.assert_close(policy.eval().actor(obs), a1)
    with pytest.raises(ValueError, match="must be >= 0"):
        policy.set_training_progress(-1, 10)


@pytest.mark.parametrize("num_blocks", [1, 2])
def test_non_neighbours_do_not_reach_an_agent(num_blocks: int):
    m = 6
    policy = _policy(m, sparsity=0.4, num_blocks=num_blocks).eval()
    adjacency = policy.adjacency().bool()  # row i: whom i hears (itself included)
    # With L blocks messages travel L hops: agent i's receptive field is the L-step reachability.
    reach = adjacency.clone()
    for _ in range(num_blocks - 1):
        reach = (reach.float() @ adjacency.float() > 0) | reach
    obs = _obs(3, m)
    with torch.no_grad():
        base = policy.actor(obs)
        for j in range(m):
            other = obs.clone()
            other[:, j] += 3.0 * torch.randn_like(other[:, j])
            mean = policy.actor(other)
            for i in range(m):
                changed = not torch.allclose(mean[:, i], base[:, i], atol=1e-7, rtol=0)
                if not reach[i, j]:
                    assert not changed, f"agent {i} depends on non-neighbour {j}"
                else:
                    assert changed, f"agent {i} ignores its neighbour {j}"


def test_closed_gate_isolates_an_agent():
    m = 5
    policy = _policy(m, sparsity=1.0, gating=True)  # full graph: only the gate can cut messages
    _close_all_gates(policy)
    obs = _obs(4, m)
    for mode in ("eval", "train"):  # hard threshold when acting, Gumbel-sigmoid in training
        policy.train(mode == "train")
        policy.set_training_progress(50, 100)
        torch.manual_seed(1)
        with torch.no_grad():
            base = policy.actor(obs)
            # Each agent alone (a batch where the others are replaced by noise) gives the same output.
            other = _obs(4, m, seed=1)
            for i in range(m):
                mixed = other.clone()
                mixed[:, i] = obs[:, i]
                torch.testing.assert_close(policy.actor(mixed)[:, i], base[:, i])
    policy.eval()
    assert policy.communication_rate(obs) == 0.0
    assert policy.communication_stats(obs)["gate_open_rate"] == 0.0


def test_gate_follows_the_own_observation():
    m = 6
    policy = _policy(m, sparsity=1.0, gating=True).eval()
    with torch.no_grad():  # logit = 100 tanh(obs_0): open exactly when the agent's first feature is > 0
        first, last = policy.actor.gate.net[0][0], policy.actor.gate.net[-1]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, 0] = 1.0
        last.weight.zero_()
        last.bias.zero_()
        last.weight[0, 0] = 100.0
    obs = _obs(1, m, seed=3)
    obs[0, :, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # agents 0, 2, 4 open; 1, 3, 5 closed
    with torch.no_grad():
        base = policy.actor(obs)
        for i in range(m):
            others = obs.clone()
            noise = torch.randn(m, LAYOUT.dim - 1)
            noise[i] = 0.0  # agent i keeps its observation, the others' change (gates included)
            others[0, :, 1:] += noise
            same = torch.allclose(policy.actor(others)[0, i], base[0, i], atol=1e-7, rtol=0)
            assert same == (i % 2 == 1), f"agent {i}"
    stats = policy.communication_stats(obs)
    assert stats == {"communication_rate": 0.5, "gate_open_rate": 0.5, "graph_density": 1.0}


def test_communication_rate_without_gating():
    full = _policy(5, sparsity=1.0)
    sparse = _policy(5, sparsity=0.4)
    obs = _obs(2, 5)
    assert full.communication_rate(obs) == 1.0
    assert sparse.communication_rate(obs) == pytest.approx(2 / 4)
    assert _policy(1).communication_rate(_obs(2, 1)) == 0.0


def test_gate_penalty_is_the_expected_rate():
    policy = _policy(4, gating=True, gate_penalty=0.5)
    obs = _obs(3, 4)
    p = torch.sigmoid(policy.actor.gate.logits(obs))
    torch.testing.assert_close(policy.gate_penalty(obs), 0.5 * p.mean())
    assert float(_policy(4).gate_penalty(obs)) == 0.0


def test_categorical_head():
    policy = _policy(3, num_actions=5)
    obs = _obs(4, 3)
    dist, value = policy(obs)
    assert isinstance(dist, Categorical) and dist.batch_shape == (4, 3) and dist.logits.shape == (4, 3, 5)
    alone = policy.distribution(obs)  # the actor's pass without the critic's
    assert isinstance(alone, Categorical) and alone.logits.shape == (4, 3, 5)
    action, logp, v = policy.act(obs)
    assert action.shape == (4, 3) and action.dtype == torch.int64 and logp.shape == v.shape == (4, 3)
    logp2, entropy, v2 = policy.evaluate(obs, action)
    assert logp2.shape == entropy.shape == (4, 3) and (entropy > 0).all()
    policy.eval()  # evaluate with the acting graph: the same log-probabilities as when acting
    torch.testing.assert_close(policy.evaluate(obs, action)[0], logp)
    logp2.mean().backward()
    assert policy.actor.graph.edge_logits.grad is not None


def test_bad_sparsity_and_graph_size():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValidationError, match="sparsity"):
            PolicyConfig(name="commformer", sparsity=bad)
        with pytest.raises(ValueError, match=r"sparsity=.* must lie in \(0, 1\]"):
            CommFormerPolicy(LAYOUT, 4, sparsity=bad)
    with pytest.raises(ValueError, match=r"graph_size=3 does not match the number of agents \(4\)"):
        make_policy("commformer", LAYOUT, 4, graph_size=3)
    make_policy("commformer", LAYOUT, 4, graph_size=4)
    policy = _policy(4)
    with pytest.raises(ValueError, match="the communication graph has 4 agents but the observations have 5"):
        policy(_obs(2, 5))
    with pytest.raises(ValidationError, match="sparsity does not apply to policy 'attention'"):
        PolicyConfig(name="attention", sparsity=0.4)
    with pytest.raises(ValueError, match="unknown CommFormer options: hidden_sizes"):
        CommFormerPolicy(LAYOUT, 4, hidden_sizes=(8,))


def test_config_round_trip():
    cfg = PolicyConfig.model_validate(
        {"name": "commformer", "sparsity": 0.4, "gating": True, "width": 24, "num_heads": 2, "warmup_updates": 5}
    )
    policy = make_policy("commformer", LAYOUT, 4, **cfg.model_dump(exclude={"name"}, exclude_none=True))
    assert policy.actor.graph.k == 1 and policy.actor.gate is not None and policy.actor.graph.warmup_updates == 5
    assert policy.actor.blocks[0].attention.num_heads == 2 and policy.actor.mean.in_features == 24


def test_runs_on_predator_prey_with_a_categorical_head():
    from envs import predator_prey_v0

    env = predator_prey_v0.parallel_env(grid_size=5, vision=1, num_predators=3, max_steps=5)
    torch.manual_seed(0)
    policy = make_policy("commformer", env.obs_layout, 3, num_actions=5, sparsity=0.4, gating=True)
    obs, _ = env.reset(seed=0)
    while env.agents:
        batch = torch.as_tensor(np.stack([obs[a] for a in env.possible_agents]))[None]  # [1, 3, D]
        action, logp, value = policy.act(batch)
        assert action.shape == logp.shape == value.shape == (1, 3)
        obs, *_ = env.step({a: int(action[0, i]) for i, a in enumerate(env.agents)})
    # k = max(int(3 * 0.4), 1) = 1 in-edge of 2 possible: each open gate receives exactly one message.
    stats = policy.communication_stats(batch)
    assert stats["graph_density"] == 0.5
    assert stats["communication_rate"] == pytest.approx(stats["gate_open_rate"] * 0.5, abs=1e-9)
    with torch.no_grad():  # gates forced open / shut: the rate is the whole graph / nothing
        policy.actor.gate.net[-1].weight.zero_()
        policy.actor.gate.net[-1].bias.fill_(10.0)
        assert policy.communication_rate(batch) == pytest.approx(0.5)
        policy.actor.gate.net[-1].bias.fill_(-10.0)
        assert policy.communication_rate(batch) == 0.0


def test_graph_learns_which_agent_to_hear():
    # Agent i must output the first feature of agent i + 2: with one in-edge each (S = 0.2, n = 5)
    # the straight-through Gumbel top-k has to find exactly those senders (a few seconds on a CPU).
    torch.manual_seed(0)
    n, layout = 5, Layout(self_dim=3, num_neighbors=0, obstacle_dim=0)
    policy = CommFormerPolicy(layout, n, sparsity=0.2, warmup_updates=0, width=16)
    source = torch.tensor([(i + 2) % n for i in range(n)])
    opt = torch.optim.Adam(policy.policy_parameters(), lr=3e-3)
    edge_opt = torch.optim.Adam(policy.edge_parameters(), lr=3e-2)
    for _ in range(100):
        obs = torch.randn(32, n, 3)
        loss = (policy.actor(obs) - obs[:, source, :1]).pow(2).mean()
        opt.zero_grad()
        edge_opt.zero_grad()
        loss.backward()
        opt.step()
        edge_opt.step()
    heard = (policy.adjacency() - torch.eye(n)).argmax(-1)
    assert heard.tolist() == source.tolist()


def test_a_closed_gate_still_learns_in_training():
    """The straight-through mixture keeps the gate's gradient alive while every gate is closed, and the
    training forward of a closed gate equals the agent's output without messages."""
    policy = _policy(4, gating=True, warmup_updates=0)
    _close_all_gates(policy)
    policy.set_training_progress(5, 10)
    policy.train()
    obs = torch.randn(3, 4, LAYOUT.dim)
    out = policy.actor(obs)
    out.pow(2).sum().backward()
    gate_grad = sum(float(p.grad.abs().sum()) for p in policy.actor.gate.parameters())
    assert gate_grad > 0
    with torch.no_grad():  # forward value: the self-only output (the gate is closed for everyone)
        x = policy.actor.encoder(obs.reshape(12, -1)).view(3, 4, -1)
        eye = torch.eye(4, dtype=torch.bool)
        alone = policy.actor._run_blocks(x, eye.float().expand(3, 4, 4), eye.expand(3, 4, 4))
    torch.testing.assert_close(out.detach(), alone)
