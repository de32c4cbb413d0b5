"""Configuration validation: bad values fail up front, naming the field; derived quantities are right."""

import pytest
from pydantic import ValidationError

from envs.config import SwarmConfig, make_config
from envs.scenarios import SCENARIO_NAMES
from envs.swarm import QuadSwarmVecEnv


def rejected(**kwargs) -> str:
    """The error message of an invalid configuration (it must fail as a ValueError)."""
    with pytest.raises(ValueError) as exc:
        make_config(**kwargs)
    return str(exc.value)


def test_defaults_are_the_reference_values():
    cfg = make_config()
    assert cfg.num_neighbors == 2 and cfg.density == 0.2 and cfg.obstacle_size == 0.6
    assert cfg.dynamics.mass == 0.028 and cfg.dynamics.thrust_to_weight == 1.9
    assert cfg.dynamics.dt == pytest.approx(0.005) and cfg.dynamics.control_dt == pytest.approx(0.01)
    assert cfg.episode_steps == 1500
    assert cfg.reward.clip == 10.0 and cfg.reward.neighbour_collision == 5.0
    assert cfg.obs_dim == 40


@pytest.mark.parametrize("density", [-0.1, 1.0, 1.5])
def test_density_outside_unit_interval_rejected(density):
    assert "density" in rejected(density=density)


@pytest.mark.parametrize("density", [0.0, 0.2, 0.99])
def test_density_inside_unit_interval_accepted(density):
    assert make_config(density=density).density == density


@pytest.mark.parametrize("num_drones, num_neighbors", [(8, 8), (8, 9), (1, 1), (4, 6)])
def test_num_neighbors_must_be_below_num_drones(num_drones, num_neighbors):
    msg = rejected(num_drones=num_drones, num_neighbors=num_neighbors)
    assert "num_neighbors" in msg and "num_drones" in msg


def test_largest_valid_num_neighbors_accepted():
    assert make_config(num_drones=8, num_neighbors=7).num_neighbors == 7
    assert make_config(num_drones=1, num_neighbors=0).obs_dim == 28


def test_unknown_scenario_rejected_listing_the_allowed_names():
    msg = rejected(scenario="o_randomm")
    assert "scenario" in msg and "o_randomm" in msg
    for name in SCENARIO_NAMES:
        assert name in msg, f"allowed name {name!r} missing from: {msg}"


def test_unknown_scenario_inside_a_mix_rejected():
    msg = rejected(scenario={"o_random": 1.0, "nope": 1.0})
    assert "scenario" in msg and "nope" in msg


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_dronez": 4}, "num_dronez"),
        ({"dynamics": {"masss": 1.0}}, "masss"),
        ({"reward": {"colision": 1.0}}, "colision"),
        ({"noise": {"enabled": True, "sigma": 0.1}}, "sigma"),
        ({"randomization": {"mas": 0.1}}, "mas"),
    ],
)
def test_unknown_keys_rejected_also_nested(kwargs, field):
    msg = rejected(**kwargs)
    assert field in msg
    if isinstance(next(iter(kwargs.values())), dict):
        assert f"{next(iter(kwargs))}.{field}" in msg, f"nested path missing from: {msg}"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"dynamics": {"mass": -0.028}}, "dynamics.mass"),
        ({"dynamics": {"mass": 0.0}}, "dynamics.mass"),
        ({"dynamics": {"thrust_to_weight": 0.9}}, "dynamics.thrust_to_weight"),
        ({"dynamics": {"physics_hz": -200}}, "dynamics.physics_hz"),
        ({"num_drones": 0}, "num_drones"),
        ({"episode_seconds": 0}, "episode_seconds"),
        ({"obstacle_size": 1.2}, "obstacle_size"),
        ({"reward": {"clip": 0}}, "reward.clip"),
    ],
)
def test_out_of_range_values_rejected_naming_the_field(kwargs, field):
    assert field in rejected(**kwargs)


@pytest.mark.parametrize(
    "mix", [{"o_random": 0.0}, {"o_random": 0.0, "hover": 0.0}, {}, {"o_random": -1.0, "hover": 1.0}]
)
def test_scenario_mix_without_positive_total_weight_rejected(mix):
    assert "scenario" in rejected(scenario=mix)


def test_valid_mix_accepted_and_weights_normalised():
    cfg = make_config(scenario={"o_random": 3.0, "static_same_goal": 1.0, "hover": 0.0})
    assert cfg.scenario_weights == pytest.approx({"o_random": 0.75, "static_same_goal": 0.25})
    assert sum(cfg.scenario_weights.values()) == pytest.approx(1.0)
    assert cfg.uses_obstacles
    assert make_config(scenario="hover").scenario_weights == {"hover": 1.0}
    assert not make_config(scenario={"hover": 1, "swap_goals": 2}).uses_obstacles


@pytest.mark.parametrize("num_drones, k", [(8, 0), (8, 2), (8, 6), (3, 2), (32, 31)])
def test_obs_dim_is_19_plus_6k_plus_9(num_drones, k):
    cfg = make_config(num_drones=num_drones, num_neighbors=k)
    assert cfg.obs_dim == 19 + 6 * k + 9


def test_config_is_frozen_and_validation_happens_before_env_construction():
    cfg = make_config()
    with pytest.raises(ValidationError):
        cfg.density = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SwarmConfig(density=2.0)
    with pytest.raises(ValueError):
        QuadSwarmVecEnv(cfg, num_envs=0)


def test_derived_quantities_follow_the_config():
    cfg = make_config(episode_seconds=2.0, dynamics={"physics_hz": 500.0, "sim_steps": 5}, obstacle_area=(6.0, 4.0))
    assert cfg.dynamics.control_dt == pytest.approx(0.01)
    assert cfg.episode_steps == 200
    assert cfg.grid == (6, 4)
    assert cfg.dynamics.max_thrust == pytest.approx(1.9 * 0.028 * 9.81 / 4)


# -- the experiment-file pipeline (marl.config -> marl.train_config.resolve_config) ---------------------------
def test_base_is_merged_key_by_key_relative_to_the_file_and_overrides_come_last(tmp_path):
    from marl.train_config import resolve_config

    (tmp_path / "parent.yaml").write_text("env: {num_drones: 4, density: 0.1}\ntrain: {lr: 0.001, epochs: 3}\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text("base: ../parent.yaml\nname: child\nenv: {density: 0.3}\n")
    cfg = resolve_config(sub / "child.yaml", ["train.epochs=7", "agent.name=mlp"])
    assert (cfg.name, cfg.env.num_drones, cfg.env.density) == ("child", 4, 0.3)  # merged, this file wins
    assert (cfg.train.lr, cfg.train.epochs, cfg.agent.name) == (0.001, 7, "mlp")
    assert resolve_config(sub / "child.yaml").to_dict()["env"]["density"] == 0.3


def test_a_base_cycle_and_bad_overrides_are_named(tmp_path):
    from marl.train_config import resolve_config

    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ValueError, match="nest more than 8 deep"):
        resolve_config(tmp_path / "a.yaml")
    with pytest.raises(ValueError, match="unknown section 'trian'"):
        resolve_config("quickstart", ["trian.lr=1"])
    with pytest.raises(ValueError, match="section.key=value"):
        resolve_config("quickstart", ["train.lr"])
    with pytest.raises(ValueError, match=r"train\.lr"):
        resolve_config("quickstart", ["train.lr=-1"])
