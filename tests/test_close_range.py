"""agent.close_range: a second actor network for the drones next to a neighbour, trained, checkpointed and exported."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from agents import make_policy
from agents.close_range import CloseRangeActor
from envs.config import SwarmConfig
from envs.observations import obs_spec
from marl.imitation import fit_close_range
from marl.imitation.fit import closing_speeds
from marl.pretrain import load_weights
from marl.train_config import resolve_config

K = 2
S = 19  # self segment; neighbour j's relative position at S + 6 j
SDF_CENTRE = S + 6 * K + 4


def _obs(n: int, near: bool, seed: int = 0) -> torch.Tensor:
    """n x 4 random observations whose nearest neighbour is 0.1 m (near) or >= 1 m away (far); the SDF's
    centre (the nearest column's surface) 1 m away."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 4, obs_spec(K).dim, generator=g)
    obs[..., SDF_CENTRE] = 1.0
    for j in range(K):
        direction = torch.nn.functional.normalize(torch.randn(n, 4, 3, generator=g), dim=-1)
        dist = 0.1 if (near and j == 1) else 1.0 + j
        obs[..., S + 6 * j : S + 6 * j + 3] = dist * direction
    return obs


def _policy(close_range: float = 0.29, name: str = "attention", column_range: float | None = None,
            close_time: float | None = None, column_time: float | None = None):
    torch.manual_seed(0)
    return make_policy(name, obs_spec(K), 4, close_range=close_range, column_range=column_range,
                       close_time=close_time, column_time=column_time)


def test_gate_picks_the_near_network_next_to_a_neighbour_and_the_far_one_elsewhere():
    policy = _policy()
    actor = policy.actor
    assert isinstance(actor, CloseRangeActor) and actor.close_range == pytest.approx(0.29)
    near, far = _obs(5, near=True), _obs(5, near=False)
    assert actor.is_close(near).all() and not actor.is_close(far).any()
    with torch.no_grad():
        torch.testing.assert_close(actor(near), actor.near(near))
        far_mean = actor.mean(actor.encoder(far.reshape(-1, far.shape[-1]))).view(5, 4, -1)
        torch.testing.assert_close(actor(far), far_mean)
        far_on_near = actor.mean(actor.encoder(near.reshape(-1, near.shape[-1]))).view(5, 4, -1)
        assert (actor(near) - far_on_near).abs().max() > 1e-4  # two networks, not one
        # a mixed batch: each agent by its own gate
        mixed = torch.cat([near[:, :2], far[:, 2:]], 1)
        torch.testing.assert_close(actor(mixed)[:, :2], actor.near(mixed)[:, :2])
        torch.testing.assert_close(actor(mixed)[:, 2:], far_mean[:, 2:])
    # the shared log-std and the sampling path work as for the one-network actor
    action, log_prob, value = policy.act(mixed)
    assert action.shape == (5, 4, 4) and log_prob.shape == value.shape == (5, 4)
    assert sum(p.numel() for p in actor.near.parameters()) == sum(
        p.numel() for p in (*actor.encoder.parameters(), *actor.mean.parameters()))


def test_close_time_hands_fast_approaches_to_the_near_network_earlier():
    """A neighbour 0.6 m away is near for close_range 0.45 m and close_time 0.1 s when it closes in faster than
    1.5 m/s, never when it moves away, and never without close_time."""
    obs = _obs(3, near=False)
    obs[:, 0, S : S + 3] = torch.tensor([0.6, 0.0, 0.0])
    obs[:, 0, S + 3 : S + 6] = torch.tensor([[-2.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    timed = _policy(close_range=0.45, close_time=0.1).actor
    assert timed.gates(obs)["near"][:, 0].tolist() == [True, False, False]
    assert not timed.gates(obs)["near"][:, 1:].any()  # the others' neighbours are >= 1 m away
    assert not _policy(close_range=0.45).actor.gates(obs)["near"].any()
    with pytest.raises(ValueError, match="close_time widens"):
        make_policy("attention", obs_spec(K), 4, close_time=0.1)


def test_column_range_adds_a_third_network_for_the_drones_next_to_a_column():
    actor = _policy(column_range=0.15).actor
    obs = _obs(3, near=False)
    assert not actor.is_close(obs).any()
    obs[:, 1, SDF_CENTRE] = 0.1  # drone 1 of each swarm 0.1 m from a column's surface
    obs[:, 2, SDF_CENTRE] = 0.1  # drone 2 too, and next to a neighbour: the near network has precedence
    obs[:, 2, S : S + 3] = torch.tensor([0.1, 0.0, 0.0])
    gates = actor.gates(obs)
    assert gates["column"][:, 1].all() and not gates["column"][:, [0, 2, 3]].any()
    assert gates["near"][:, 2].all() and not gates["near"][:, [0, 1, 3]].any()
    with torch.no_grad():
        torch.testing.assert_close(actor(obs)[:, 1], actor.column(obs)[:, 1])
        torch.testing.assert_close(actor(obs)[:, 2], actor.near(obs)[:, 2])
    assert set(_policy().actor.gates(obs)) == {"near"}  # without column_range the columns do not count
    with pytest.raises(ValueError, match="set close_range too"):
        make_policy("attention", obs_spec(K), 4, column_range=0.1)


def test_column_time_hands_fast_approaches_to_a_column_to_the_column_network_earlier():
    """A column surface 0.25 m away along +x (SDF rising towards -x) is in the gate of column_range 0.15 m and
    column_time 0.1 s for a drone flying at it faster than 1 m/s, not for one flying away or along it, and
    never without column_time."""
    obs = _obs(4, near=False)
    sdf = obs[:, :, SDF_CENTRE - 4 : SDF_CENTRE + 5]
    x_offset = torch.tensor([-1.0, 0.0, 1.0]).repeat_interleave(3)  # index (i + 1) * 3 + (j + 1), x slowest
    sdf[:] = 0.25 - 0.1 * x_offset  # the column lies towards +x: the SDF falls with x
    obs[:, :, 3:6] = 0.0
    obs[:, 0, 3:6] = torch.tensor([[1.5, 0.0, 0.0], [0.5, 0.0, 0.0], [-1.5, 0.0, 0.0], [0.0, 1.5, 0.0]])
    timed = _policy(column_range=0.15, column_time=0.1).actor
    assert timed.gates(obs)["column"][:, 0].tolist() == [True, False, False, False]
    assert not timed.gates(obs)["column"][:, 1:].any()  # at rest
    assert not _policy(column_range=0.15).actor.gates(obs)["column"].any()
    with pytest.raises(ValueError, match="column_time widens"):
        make_policy("attention", obs_spec(K), 4, close_range=0.29, column_time=0.1)


def test_config_refuses_close_range_where_it_cannot_apply():
    with pytest.raises(ValueError, match="close_range applies to a Gaussian"):
        make_policy("commformer", obs_spec(K), 4, close_range=0.29)
    with pytest.raises(ValueError, match="close_range applies to a Gaussian"):
        make_policy("mlp", obs_spec(K), 4, close_range=0.29, num_actions=5)
    with pytest.raises(ValueError, match="close_range"):
        make_policy("attention", obs_spec(K), 4, close_range=0.0)
    with pytest.raises(ValueError, match="set agent.close_range"):
        resolve_config("swarm8_obstacles_dagger", ["pretrain.close_range={swarms: 8}"])
    cfg = resolve_config("swarm8_obstacles_dagger", ["agent.close_range=0.29", "pretrain.close_range={swarms: 8}"])
    assert cfg.pretrain.close_range.swarms == 8 and cfg.pretrain.close_range.fit_steps == 6000


def test_fit_close_range_fits_only_the_near_network_on_close_drones():
    env = SwarmConfig(num_drones=4, num_neighbors=K, scenario="static_same_goal", episode_seconds=2.0)
    policy = make_policy("attention", obs_spec(K), 4, close_range=1.0)  # 1 m: every swarm has close drones
    far_before = {k: v.clone() for k, v in policy.actor.state_dict().items() if not k.startswith("near.")}
    rounds = fit_close_range(policy, env, "pid_avoid", swarms=4, rounds=2, fit_steps=150, batch=32, seed=0)["rounds"]
    first, second = rounds[0]["near"], rounds[1]["near"]
    assert 100 < first["drone_steps"] < second["drone_steps"]  # the second round adds data
    assert first["mse"] < 0.5 * first["mse_before"] and second["mse"] < second["mse_before"], rounds
    after = policy.actor.state_dict()
    assert all(torch.equal(after[k], v) for k, v in far_before.items())  # the far network did not move
    with pytest.raises(ValueError, match="close-range actor"):
        fit_close_range(make_policy("attention", obs_spec(K), 4), env, swarms=1, fit_steps=1)


def test_closing_speeds_measure_the_approach_to_each_gates_hazard():
    """Towards the nearest neighbour and towards the column the SDF shows, never away (0 then)."""
    actor = _policy(column_range=0.15).actor
    obs = torch.zeros(2, 1, obs_spec(K).dim)
    obs[:, 0, S : S + 3] = torch.tensor([0.3, 0.0, 0.0])  # nearest neighbour 0.3 m along +x
    obs[:, 0, S + 6 : S + 9] = torch.tensor([0.0, 1.0, 0.0])  # a farther one along +y, closing fast
    obs[:, 0, S + 9 : S + 12] = torch.tensor([0.0, -5.0, 0.0])
    obs[0, 0, S + 3 : S + 6] = torch.tensor([-1.5, 0.0, 0.0])  # the nearest comes towards us at 1.5 m/s
    obs[1, 0, S + 3 : S + 6] = torch.tensor([1.5, 0.0, 0.0])  # ... or moves away
    sdf = SDF_CENTRE - 4
    for i in (-1, 0, 1):  # a column towards -y: the SDF grows with the y offset j (index (i + 1) 3 + (j + 1))
        for j in (-1, 0, 1):
            obs[:, 0, sdf + (i + 1) * 3 + (j + 1)] = 0.1 + 0.1 * j
    obs[0, 0, 3:6] = torch.tensor([0.4, -0.7, 0.0])  # own velocity: towards the column at 0.7 m/s
    obs[1, 0, 3:6] = torch.tensor([0.4, 0.7, 0.0])  # ... away from it
    speeds = closing_speeds(actor, obs)
    torch.testing.assert_close(speeds["near"][:, 0], torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(speeds["column"][:, 0], torch.tensor([0.7, 0.0]))
    assert set(closing_speeds(_policy().actor, obs)) == {"near"}


def test_init_from_a_one_network_policy_starts_the_near_network_as_its_copy(tmp_path):
    from marl.checkpoint import save_checkpoint

    torch.manual_seed(3)
    source = make_policy("attention", obs_spec(K), 4)
    save_checkpoint(tmp_path / "src.pt", {"config": {"env": {"num_drones": 4, "num_neighbors": K}}}, policy=source)
    policy = _policy()
    load_weights(policy, str(tmp_path / "src.pt"), refit_near=True)
    mixed = torch.cat([_obs(3, True)[:, :2], _obs(3, False)[:, 2:]], 1)
    with torch.no_grad():
        torch.testing.assert_close(policy.actor(mixed), source.actor(mixed))  # flies as the source did
    with pytest.raises(ValueError, match="missing"):
        load_weights(_policy(), str(tmp_path / "src.pt"))  # without refit_near the near network must be there


@pytest.mark.parametrize("name,column_range,close_time,column_time",
                         [("attention", None, None, None), ("mlp", None, None, None), ("attention", 0.15, 0.3, None),
                          ("attention", 0.15, None, 0.3)])
def test_c_export_runs_the_gate_and_both_networks_as_torch_does(tmp_path, name, column_range, close_time,
                                                                column_time):
    """The generated C (float32 weights) on the host against torch, on states on both sides of the gate."""
    from deploy import verify
    from deploy.export_c import generate_c
    from deploy.quantize import quantize_actor

    assert shutil.which("gcc") is not None, "gcc is needed to build the host binary (make setup installs it)"
    actor = _policy(name=name, column_range=column_range, close_time=close_time, column_time=column_time).actor.eval()
    with torch.no_grad():  # gated networks unlike the far one, so a wrong branch shows
        for head in actor.heads().values():
            for p in head.parameters():
                p.add_(0.3 * torch.randn_like(p))
    test = torch.cat([_obs(50, True, seed=1), _obs(50, False, seed=2)]).reshape(-1, obs_spec(K).dim)
    test[::7, SDF_CENTRE] = 0.1  # some next to a column: close only with column_range
    close = actor.is_close(test)
    assert 0 < int(close.sum()) < len(test)
    q = quantize_actor(actor, "float32", None)
    with torch.no_grad():
        ref = q.dequantized(actor)(test).clamp(-1, 1)
        far_only = actor.mean(actor.encoder(test)).clamp(-1, 1)
    assert (ref - far_only)[close].abs().max() > 1e-2  # the near network's actions differ from the far one's
    files, stats = generate_c(actor, q, test[:3], ref[:3], fallback_action=0.0)
    assert "close-range" in files["policy.h"] and "if (close_range)" in files["policy.c"]
    assert ("a column within" in files["policy.h"]) == (column_range is not None)
    assert ("} else if (obs[" in files["policy.c"]) == (column_range is not None and column_time is None)
    assert ("closing" in files["policy.c"]) == (close_time is not None)
    assert ("column_clear" in files["policy.c"]) == (column_time is not None)
    for fname, text in files.items():
        (tmp_path / fname).write_text(text)
    host, status = verify.run_host(tmp_path, test.numpy())
    assert status == 0
    diff = np.abs(host - ref.numpy())
    assert diff.max() < 2e-6, f"max |C - torch| = {diff.max():.2e}"
    single_actor = make_policy(name, obs_spec(K), 4).actor
    _, single = generate_c(single_actor, quantize_actor(single_actor, "float32", None), test[:3], ref[:3])
    assert single["macs"] < stats["macs"] < 1.1 * single["macs"]  # one network runs per call, plus the gates


@pytest.mark.parametrize("closing_weight", [0.0, 4.0])
def test_fit_close_range_fits_each_gated_network_on_its_own_drones(closing_weight):
    env = SwarmConfig(num_drones=4, num_neighbors=K, scenario="o_random", episode_seconds=2.0)
    policy = make_policy("attention", obs_spec(K), 4, close_range=0.8, column_range=1.0)
    column_before = {k: v.clone() for k, v in policy.actor.column.state_dict().items()}
    round_ = fit_close_range(policy, env, "pid_avoid", swarms=4, fit_steps=100, batch=32, seed=0,
                             closing_weight=closing_weight)["rounds"][0]
    assert set(round_) == {"near", "column"}
    for name, fitted in round_.items():
        assert fitted["drone_steps"] > 50 and fitted["mse"] < fitted["mse_before"], (name, fitted)
    assert any(not torch.equal(v, policy.actor.column.state_dict()[k]) for k, v in column_before.items())
    with pytest.raises(ValueError, match="closing_weight"):
        fit_close_range(policy, env, swarms=1, fit_steps=1, closing_weight=-1.0)


def test_fit_close_range_side_by_side_ends_as_one_after_the_other():
    env = SwarmConfig(num_drones=4, num_neighbors=K, scenario="o_random", episode_seconds=2.0)
    policy = make_policy("attention", obs_spec(K), 4, close_range=0.8, column_range=1.0)
    twin = copy.deepcopy(policy)
    kw = {"swarms": 4, "rounds": 2, "fit_steps": 60, "batch": 32, "seed": 0, "closing_weight": 4.0, "lr_decay": True}
    serial = fit_close_range(policy, env, "pid_avoid", workers=1, **kw)
    threaded = fit_close_range(twin, env, "pid_avoid", workers=2, **kw)
    assert threaded == serial
    for (k, v), w in zip(policy.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="workers"):
        fit_close_range(policy, env, swarms=1, fit_steps=1, workers=0)


def test_actor_parts_lets_ppo_train_only_the_gated_networks(tmp_path):
    from marl.trainer import Trainer

    tiny = ["train.num_envs=8", "train.rollout_steps=16", "train.minibatches=2", "train.epochs=2",
            "logging.tensorboard=false", "logging.progress=false", "pretrain.critic_warmup_updates=0",
            "agent.close_range=0.8", "agent.column_range=1.5"]  # wide gates: all three networks fly drones

    def moved_parts(overrides: list[str], run: str) -> set[str]:
        trainer = Trainer(resolve_config("swarm_dense_close", [*tiny, *overrides]), tmp_path / run)
        before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        trainer.train_step()
        after = trainer.policy.state_dict()
        return {".".join(k.split(".")[:2]) for k, v in after.items() if not torch.equal(before[k], v)}

    every = moved_parts([], "all")
    assert {"actor.encoder", "actor.near", "actor.column"} <= every and any(k.startswith("critic.") for k in every)
    assert moved_parts(["train.actor_parts=[near, column]"], "gated") == {
        k for k in every if not k.startswith("actor.") or k in ("actor.near", "actor.column")}
    with pytest.raises(ValueError, match=r"actor_parts: \['nearby'\] not in the actor .* \['column', 'encoder', "
                                         r"'log_std', 'mean', 'near'\]"):
        Trainer(resolve_config("swarm_dense_close", [*tiny, "train.actor_parts=[nearby]"]), tmp_path / "bad")
    with pytest.raises(ValueError, match="actor_parts.*sso"):
        resolve_config("swarm_dense_close", [*tiny, "train.actor_parts=[near]", "optim.name=sso"])


def test_per_network_compression_fits_each_network_on_the_states_its_gate_picks():
    """deploy.quantize.quantize_networks: a gated network's compression sees only its own states (the others'
    may change without changing it), the far one sees them all, and the layers keep the actor's names."""
    from deploy.formats import linear_layers
    from deploy.quantize import quantize_actor

    actor = _policy(column_range=0.15).actor.eval()
    near = _obs(40, True, seed=1).reshape(-1, obs_spec(K).dim)
    far = _obs(80, False, seed=2).reshape(-1, obs_spec(K).dim)
    far[::4, SDF_CENTRE] = 0.05  # a quarter of them next to a column
    calib = torch.cat([near, far])
    gates = actor.gates(calib)
    q = quantize_actor(actor, "gptq", 3, calib=calib)
    info = q.info["networks"]
    assert {n: v["calib_states"] for n, v in info.items()} == {
        "far": len(calib), "near": int(gates["near"].sum()), "column": int(gates["column"].sum())}
    assert list(q.layers) == list(linear_layers(actor))
    # other far states (own state moved, the gates' inputs not): the far network's layers change, the near one's not
    moved = torch.cat([near, far])
    moved[len(near):, :S] += 0.5 * torch.randn(len(far), S)
    assert all(torch.equal(g, actor.gates(moved)[n]) for n, g in gates.items())
    q2 = quantize_actor(actor, "gptq", 3, calib=moved)
    assert all(torch.equal(q.layers[n].weight, q2.layers[n].weight) for n in q.layers if n.startswith("near."))
    far_layers = [n for n in q.layers if not n.startswith(("near.", "column."))]
    assert any(not torch.equal(q.layers[n].weight, q2.layers[n].weight) for n in far_layers)
    joint = quantize_actor(actor, "gptq", 3, calib=calib, per_network=False)
    assert "networks" not in joint.info and list(joint.layers) == list(q.layers)
    with pytest.raises(ValueError, match="the column network's gate picks 0 of the 160 calibration states"):
        quantize_actor(actor, "gptq", 3, calib=near)


def test_network_methods_give_one_network_its_own_method_and_the_c_matches(tmp_path):
    """quantize_networks(network_methods=...): the named network is stored with its own method (here int8,
    every other with gptq 3-bit), the bytes add up per network, the C runs the mixed actor as torch does, and
    unknown networks or methods are refused with the allowed names."""
    from helpers import c_vs_torch

    from deploy.quantize import parse_network_methods, quantize_actor

    actor = _policy(column_range=0.15).actor.eval()
    near = _obs(40, True, seed=1).reshape(-1, obs_spec(K).dim)
    far = _obs(80, False, seed=2).reshape(-1, obs_spec(K).dim)
    far[::4, SDF_CENTRE] = 0.05
    calib = torch.cat([near, far])
    q = quantize_actor(actor, "gptq", 3, calib=calib, network_methods=parse_network_methods(["near=int8"]))
    kinds = {n: (ql.kind, ql.bits) for n, ql in q.layers.items()}
    assert all(k == ("int", 8) for n, k in kinds.items() if n.startswith("near."))
    assert all(k == ("int", 3) for n, k in kinds.items() if not n.startswith("near."))  # gptq: 3-bit grid
    assert q.info["networks"]["near"]["method"] == "int8" and "calib_states" not in q.info["networks"]["near"]
    plain = quantize_actor(actor, "gptq", 3, calib=calib)
    near_bytes = {name: sum(ql.storage()["weight"] for n, ql in qa.layers.items() if n.startswith("near."))
                  for name, qa in (("mixed", q), ("plain", plain))}
    assert near_bytes["mixed"] > 2 * near_bytes["plain"]  # int8 against 3-bit indices
    assert all(torch.equal(q.layers[n].weight, plain.layers[n].weight) for n in q.layers if not n.startswith("near."))
    assert c_vs_torch(actor, q, calib, tmp_path) < 2e-6
    with pytest.raises(ValueError, match="the actor's networks are: far, near, column"):
        quantize_actor(actor, "gptq", 3, calib=calib, network_methods={"nearby": "int8"})
    with pytest.raises(ValueError, match="method='int7' is unknown; allowed: float32, int8"):
        quantize_actor(actor, "gptq", 3, calib=calib, network_methods={"near": "int7"})
    with pytest.raises(ValueError, match="'jlcm' needs a calibration set"):  # a network's own calibrated method
        quantize_actor(actor, "int8", None, network_methods={"far": "jlcm:3"})
    with pytest.raises(ValueError, match="expected NETWORK=METHOD"):
        parse_network_methods(["near"])
    with pytest.raises(ValueError, match="needs an actor with gated networks"):
        quantize_actor(make_policy("attention", obs_spec(K), 4).actor, "gptq", 3, calib=calib,
                       network_methods={"near": "int8"})


def test_record_states_adds_each_gated_network_s_states():
    from deploy.calibration import default_env_config, record_states

    cfg = default_env_config(K)
    actor = _policy(close_range=0.5, column_range=1.0).actor.eval()
    plain = record_states(cfg, 64, seed=3, policy=actor, steps=100)
    more = record_states(cfg, 64, seed=3, policy=actor, steps=100, gated=32)
    torch.testing.assert_close(more[:64], plain)  # the sample itself does not change
    extra = more[64:]
    gates = actor.gates(extra)
    n_near = int(gates["near"].sum())
    assert 0 < n_near <= 32 and 0 < int(gates["column"].sum()) <= 32
    assert gates["near"][:n_near].all() and gates["column"][n_near:].all()


def test_closed_loop_calibration_adds_the_compressed_actor_s_own_flights(monkeypatch):
    from deploy import calibration

    cfg = calibration.default_env_config(K)
    actor = make_policy("attention", obs_spec(K), cfg.num_drones).actor.eval()
    calib = calibration.record_states(cfg, 128, seed=0, policy=actor, steps=40)
    flown = []
    real = calibration.record_states

    def spy(cfg, n, seed=0, policy=None, **kw):
        flown.append(policy)
        return real(cfg, n, seed=seed, policy=policy, steps=40, **{k: v for k, v in kw.items() if k != "steps"})

    monkeypatch.setattr(calibration, "record_states", spy)
    q, grown = calibration.calibrate_in_closed_loop(actor, cfg, "gptq", 3, calib, rounds=2, seed=5)
    assert grown.shape[0] == 3 * 128 and torch.equal(grown[:128], calib)
    assert len(flown) == 2 and all(p is not actor for p in flown)
    # the first round flew the compression of the float flights: its weights are the decoded ones
    first = calibration.quantize_actor(actor, "gptq", 3, calib=calib)
    torch.testing.assert_close(flown[0].mean.weight, first.layers["mean"].weight)
    with pytest.raises(ValueError, match="rounds=-1"):
        calibration.calibrate_in_closed_loop(actor, cfg, "gptq", 3, calib, rounds=-1)
