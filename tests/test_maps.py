"""Obstacle maps, the local SDF observation, spawn slots and collision handling."""

import math

import numpy as np
import pytest
import torch

from envs.config import make_config
from envs.maps import FAR, ObstacleGrid, local_sdf, sdf_normal
from envs.swarm import QuadSwarmVecEnv

H = 0.1  # SDF resolution used below


def sdf_env_first(pos_xy, obstacles, radius, resolution=H):
    """local_sdf on env-first tensors: pos_xy [E, M, 2], obstacles [E, O, 2], radius [E] -> sdf [E, M, 9].

    (local_sdf itself works in the simulator's working layout: [2, M, E], [2, O, E] -> [9, M, E].)
    """
    sdf = local_sdf(pos_xy.permute(2, 1, 0), obstacles.permute(2, 1, 0), radius, resolution)
    return sdf.permute(2, 1, 0)


def normal_env_first(sdf, resolution=H):
    """sdf_normal on an env-first SDF [E, M, 9] -> [E, M, 2]."""
    return sdf_normal(sdf.permute(2, 1, 0), resolution).permute(2, 1, 0)


def brute_force_sdf(pos_xy, obstacles, radius, resolution=H):
    """Reference sdf [E, M, 9] in float64 numpy, ignoring columns parked at FAR."""
    pos_xy, obstacles, radius = (np.asarray(x, dtype=np.float64) for x in (pos_xy, obstacles, radius))
    e, m = pos_xy.shape[:2]
    sdf = np.zeros((e, m, 9))
    for ei in range(e):
        cols = [c for c in obstacles[ei] if abs(c[0]) < FAR / 2]
        for mi in range(m):
            p = pos_xy[ei, mi]
            for k, (i, j) in enumerate((i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)):
                q = p + resolution * np.array([i, j])
                sdf[ei, mi, k] = min(np.linalg.norm(c - q) for c in cols) - radius[ei]
    return sdf


# ------------------------------------------------------------------------------------------ local SDF


def test_sdf_single_column_values_and_grid_order():
    sdf = sdf_env_first(torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]]), torch.tensor([0.3]))
    assert sdf.shape == (1, 1, 9)
    v = sdf[0, 0]
    # index = 3 * i + j for offsets (i h, j h), i, j in (-1, 0, 1) -> (0, 1, 2)
    assert math.isclose(v[4], 0.7, abs_tol=1e-6)  # centre
    assert math.isclose(v[7], 0.6, abs_tol=1e-6)  # +x point, closer to the column
    assert math.isclose(v[1], 0.8, abs_tol=1e-6)  # -x point
    assert math.isclose(v[5], math.hypot(1.0, 0.1) - 0.3, abs_tol=1e-6)  # +y point
    assert math.isclose(v[3], math.hypot(1.0, 0.1) - 0.3, abs_tol=1e-6)  # -y point
    assert math.isclose(v[8], math.hypot(0.9, 0.1) - 0.3, abs_tol=1e-6)  # (+x, +y)
    assert math.isclose(v[0], math.hypot(1.1, 0.1) - 0.3, abs_tol=1e-6)  # (-x, -y)
    assert math.isclose(v[6], math.hypot(0.9, 0.1) - 0.3, abs_tol=1e-6)  # (+x, -y)
    assert math.isclose(v[2], math.hypot(1.1, 0.1) - 0.3, abs_tol=1e-6)  # (-x, +y)


def test_sdf_y_offset_is_the_fast_index():
    """A column straight ahead in +y: the +y points (j = +1, indices 2, 5, 8) are the closest ones."""
    sdf = sdf_env_first(torch.zeros(1, 1, 2), torch.tensor([[[0.0, 2.0]]]), torch.tensor([0.5]))
    v = sdf[0, 0]
    assert math.isclose(v[5], 1.4, abs_tol=1e-6) and math.isclose(v[3], 1.6, abs_tol=1e-6)
    assert math.isclose(v[7], math.hypot(0.1, 2.0) - 0.5, abs_tol=1e-6)


def test_sdf_is_negative_inside_a_column():
    sdf = sdf_env_first(torch.tensor([[[0.05, 0.0]]]), torch.tensor([[[0.0, 0.0]]]), torch.tensor([0.3]))
    assert math.isclose(sdf[0, 0, 4], -0.25, abs_tol=1e-6)
    assert math.isclose(sdf[0, 0, 1], -0.25, abs_tol=1e-6)  # -x point sits at distance 0.05 too
    assert math.isclose(sdf[0, 0, 7], -0.15, abs_tol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sdf_matches_brute_force_on_random_layouts(seed):
    rng = np.random.default_rng(seed)
    e, m, o = 3, 5, 6
    obst = rng.uniform(-4, 4, size=(e, o, 2))
    obst[1, 4:] = FAR  # inactive slots
    obst[2, 1:] = FAR  # a single active column
    pos = rng.uniform(-4, 4, size=(e, m, 2))
    radius = rng.uniform(0.15, 0.3, size=e)
    sdf = sdf_env_first(*(torch.tensor(x, dtype=torch.float32) for x in (pos, obst, radius)))
    ref_sdf = brute_force_sdf(pos, obst, radius)
    np.testing.assert_allclose(sdf.numpy(), ref_sdf, atol=2e-5)


def test_inactive_far_columns_do_not_change_values():
    rng = np.random.default_rng(3)
    pos = torch.tensor(rng.uniform(-4, 4, size=(2, 4, 2)), dtype=torch.float32)
    active = torch.tensor(rng.uniform(-4, 4, size=(2, 3, 2)), dtype=torch.float32)
    padded = torch.cat([active, torch.full((2, 5, 2), FAR)], 1)
    padded = padded[:, torch.randperm(8, generator=torch.Generator().manual_seed(0))]  # FAR slots in between
    radius = torch.tensor([0.3, 0.2])
    assert torch.allclose(sdf_env_first(pos, active, radius), sdf_env_first(pos, padded, radius), atol=1e-5)


def test_sdf_uses_each_envs_own_radius_and_obstacles():
    sdf = sdf_env_first(torch.zeros(2, 1, 2), torch.tensor([[[1.0, 0.0]], [[0.0, -2.0]]]), torch.tensor([0.3, 0.1]))
    assert math.isclose(sdf[0, 0, 4], 0.7, abs_tol=1e-6) and math.isclose(sdf[1, 0, 4], 1.9, abs_tol=1e-6)
    assert sdf[0, 0, 7] < sdf[0, 0, 1] and sdf[1, 0, 3] < sdf[1, 0, 5]


@pytest.mark.parametrize("offset", [(0.7, 0.0), (-0.2, 0.5), (0.05, -0.12), (-0.4, -0.4)])
def test_sdf_normal_points_away_from_the_nearest_column(offset):
    centre = torch.tensor([0.5, -1.0])
    pos = (centre + torch.tensor(offset)).view(1, 1, 2)
    obst = torch.stack([centre, torch.tensor([4.0, 4.0]), torch.tensor([FAR, FAR])]).unsqueeze(0)
    n = normal_env_first(sdf_env_first(pos, obst, torch.tensor([0.3])))[0, 0]
    want = torch.tensor(offset) / torch.tensor(offset).norm()
    assert math.isclose(float(n.norm()), 1.0, abs_tol=1e-5)
    # central differences over +-h: a few degrees off when the drone is within ~h of the column centre
    assert float((n - want).abs().max()) < 0.06, f"normal {n.tolist()}, expected {want.tolist()}"


# ------------------------------------------------------------------------------------- obstacle grid


@pytest.mark.parametrize("grid", [(8, 8), (5, 7)])
def test_grid_sample_places_the_right_number_of_distinct_interior_columns(grid):
    gx, gy = grid
    og = ObstacleGrid(grid, 1.0, torch.device("cpu"))
    interior = gx * (gy - 2)
    densities = torch.tensor([0.0, 0.05, 0.2, 0.5, 0.8, 0.95])
    max_count = int(og.num_obstacles(densities.max()))
    y_start, y_goal = -(gy - 1) / 2, (gy - 1) / 2
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        pos, occupied = og.sample(densities, max_count, gen)
        assert pos.shape == (6, max_count, 2) and occupied.shape == (6, gx * gy)
        for e, d in enumerate(densities.tolist()):
            want = round(d * interior)
            act = pos[e][pos[e, :, 0].abs() < FAR / 2]
            assert act.shape[0] == want, f"density {d}: {act.shape[0]} columns, expected {want}"
            assert int(occupied[e].sum()) == want
            assert torch.all(pos[e][pos[e, :, 0].abs() >= FAR / 2] == FAR)
            assert len({tuple(c) for c in act.tolist()}) == want, "duplicated column"
            ys = act[:, 1]
            assert not torch.any((ys - y_start).abs() < 1e-6), "column in the start row"
            assert not torch.any((ys - y_goal).abs() < 1e-6), "column in the goal row"
            # columns sit on cell centres, and occupied marks exactly those cells
            cells = ((act[:, None] - og.centres[None]).norm(dim=-1) < 1e-5).nonzero()[:, 1]
            assert cells.numel() == want
            assert torch.equal(occupied[e].nonzero().squeeze(-1).sort().values, cells.sort().values)


def _nearest_cell(grid, xy):
    return (xy.unsqueeze(-2) - grid.centres).norm(dim=-1).argmin(-1)


@pytest.mark.parametrize("layout", ["reference", "rows"])
def test_o_random_starts_and_goals_are_free_distinct_and_clear_of_columns(layout):
    cfg = make_config(num_drones=8, scenario="o_random", density=0.6, layout=layout, dynamics={"thrust_noise": 0.0})
    env = QuadSwarmVecEnv(cfg, num_envs=6)
    env.reset(seed=3)
    for _ in range(3):
        s = env.get_state(list(range(6)))
        gx, gy = env.grid.gx, env.grid.gy
        arm = cfg.dynamics.arm
        for e in range(6):
            cols = s.obstacles[e][s.obstacles[e, :, 0].abs() < FAR / 2]
            want = int(0.6 * gx * gy) if layout == "reference" else round(0.6 * gx * (gy - 2))
            assert cols.shape[0] == want
            for name, pts in (("start", s.pos[e]), ("goal", s.goals[e])):
                cells = _nearest_cell(env.grid, pts[:, :2])
                assert not s.occupied[e, cells].any(), f"{name} in an occupied cell"
                clearance = (pts[:, None, :2] - cols[None]).norm(dim=-1) - s.obstacle_radius[e]
                assert float(clearance.min()) > arm, f"{name} too close to a column"
                pair = (pts[:, None] - pts[None]).norm(dim=-1) + torch.eye(8) * 1e3
                assert float(pair.min()) > 2 * arm, f"{name}s not pairwise distinct"
                lo, hi = float(pts[:, 2].min()), float(pts[:, 2].max())
                assert 1.0 - cfg.spawn_jitter - 1e-6 <= lo and hi <= 3.0 + cfg.spawn_jitter + 1e-6
            if layout == "rows":
                assert torch.all(_nearest_cell(env.grid, s.pos[e, :, :2]) < gx), "starts must be in the start row"
                assert torch.all(_nearest_cell(env.grid, s.goals[e, :, :2]) >= gx * (gy - 1)), "goals in the goal row"
        env.reset()


# ----------------------------------------------------------------------------------------- collisions


def _hover(env):
    tw = env.cfg.dynamics.thrust_to_weight
    return torch.full((env.num_envs, env.num_drones, 4), 2.0 / tw - 1.0)


def _ids(env):
    return list(range(env.num_envs))


def test_neighbour_collision_penalised_once_and_reported_after_grace():
    cfg = make_config(num_drones=4, scenario="hover", episode_seconds=2.0, dynamics={"thrust_noise": 0.0})
    env = QuadSwarmVecEnv(cfg, num_envs=2)
    env.reset(seed=0)
    snap = env.get_state(_ids(env))
    snap.pos[0, 1] = snap.pos[0, 0] + torch.tensor([0.05, 0.0, 0.0])  # env 0: drones 0 and 1 touch
    snap.goals[0, 1] = snap.pos[0, 1]
    env.set_state(_ids(env), snap)
    act = _hover(env)
    _, r1, *_ = env.step(act)
    _, r2, *_ = env.step(act)
    penalty = cfg.reward.neighbour_collision
    for d in (0, 1):
        assert float(r1[0, d]) < -penalty, f"no collision penalty: {r1[0].tolist()}"
        assert math.isclose(float(r1[0, d] - r2[0, d]), -penalty, abs_tol=0.02), "penalty should be -5 once"
        assert float(r2[0, d]) > -0.5, "collision penalised again while still touching"
    assert float(r1[0, 2:].min()) > -0.5 and float(r1[1].min()) > -0.5, "bystanders penalised"
    info = {}
    for _ in range(env.episode_steps - 2):
        *_, info = env.step(act)
    ep = info["episode"]
    assert ep["neighbour_collision_rate"].tolist() == [0.5, 0.0]
    assert ep["collision_rate"].tolist() == [0.5, 0.0]
    assert ep["success_rate"].tolist() == [0.5, 1.0]


def test_collision_penalty_follows_collision_scale():
    cfg = make_config(num_drones=2, num_neighbors=1, scenario="hover", dynamics={"thrust_noise": 0.0})
    env = QuadSwarmVecEnv(cfg, num_envs=1)
    env.reset(seed=0)
    env.set_collision_scale(0.0)
    snap = env.get_state([0])
    snap.pos[0, 1] = snap.pos[0, 0] + torch.tensor([0.0, 0.0, 0.05])
    snap.goals[0, 1] = snap.pos[0, 1]
    env.set_state([0], snap)
    _, r, *_ = env.step(_hover(env))
    assert float(r.min()) > -0.5
    with pytest.raises(ValueError):
        env.set_collision_scale(1.5)


def test_collision_before_grace_is_not_reported():
    cfg = make_config(
        num_drones=2, num_neighbors=1, scenario="hover", episode_seconds=2.0, dynamics={"thrust_noise": 0.0}
    )
    env = QuadSwarmVecEnv(cfg, num_envs=1)
    env.reset(seed=0)
    snap = env.get_state([0])
    far_apart = snap.pos.clone()
    snap.pos[0, 1] = snap.pos[0, 0] + torch.tensor([0.05, 0.0, 0.0])
    snap.goals[0, 1] = snap.pos[0, 1]
    env.set_state([0], snap)
    env.step(_hover(env))  # collides at t = 1, inside the grace period
    snap = env.get_state([0])
    snap.pos[0, 1] = far_apart[0, 1]
    snap.goals[0, 1] = far_apart[0, 1]
    env.set_state([0], snap)
    info = {}
    for _ in range(env.episode_steps - 1):
        *_, info = env.step(_hover(env))
    assert float(info["episode"]["neighbour_collision_rate"][0]) == 0.0


def _obstacle_env(**kwargs):
    cfg = make_config(num_drones=2, num_neighbors=1, scenario="o_random", dynamics={"thrust_noise": 0.0}, **kwargs)
    env = QuadSwarmVecEnv(cfg, num_envs=1)
    env.reset(seed=0)
    return env


def _put_drone_in_first_column(env):
    snap = env.get_state([0])
    col = snap.obstacles[0, 0].clone()
    assert col.abs().max() < FAR / 2, "slot 0 should hold an active column"
    snap.pos[0, 0] = torch.tensor([col[0] + 0.1, col[1] + 0.05, 2.0])
    snap.vel[0, 0] = torch.tensor([-0.5, 0.0, 0.0])  # moving further in
    env.set_state([0], snap)
    return col, snap


def test_drone_inside_column_is_penalised_and_pushed_out():
    env = _obstacle_env()
    cfg = env.cfg
    col, _ = _put_drone_in_first_column(env)
    act = _hover(env)
    _, rew, *_ = env.step(act)
    s = env.get_state([0])
    radius, arm = float(s.obstacle_radius[0]), cfg.dynamics.arm
    # The response is stored with the state and applied at the start of the next step.
    pos_after, vel_after = s.pos[0, 0, :2] + s.dpos[0, 0, :2], s.vel[0, 0, :2] + s.dvel[0, 0, :2]
    dist = float((pos_after - col).norm())
    # pushed to the surface along the SDF normal (central differences: within 0.5 mm of exact)
    assert dist >= arm + radius - 5e-4, f"drone still inside the column: {dist:.4f} < {arm + radius:.4f}"
    assert float(((pos_after - col) * vel_after).sum()) >= 0, "velocity still points into the column"
    # reward: shaping of the state after the step, minus the obstacle penalty for drone 0 only
    dt = cfg.dynamics.control_dt
    c = cfg.reward
    shaping = (
        c.pos * (s.pos[0] - s.goals[0]).norm(dim=-1)
        + c.action * act[0].norm(dim=-1)
        - c.orient * s.rot[0, :, 2, 2]
        + c.spin * s.omega[0].norm(dim=-1)
    )
    expected = -dt * shaping - torch.tensor([c.obstacle_collision, 0.0])
    expected = expected.clamp(-c.clip, c.clip)
    assert torch.allclose(rew[0], expected, atol=1e-3), f"{rew[0].tolist()} vs {expected.tolist()}"
    _, rew2, *_ = env.step(act)
    assert float(rew2[0, 0]) > -1.0, "obstacle collision penalised again"


def test_obstacle_collision_after_grace_is_reported():
    env = _obstacle_env(episode_seconds=2.0)
    act = _hover(env)
    for _ in range(env.grace_steps + 5):
        env.step(act)
    _put_drone_in_first_column(env)
    info = {}
    while "episode" not in info:
        *_, info = env.step(act)
    assert float(info["episode"]["obstacle_collision_rate"][0]) == 0.5
    assert float(info["episode"]["collision_rate"][0]) >= 0.5


def test_step_obs_matches_the_state_after_the_collision_response():
    """The observation returned by step() must describe the state get_state() reports (the moment of
    contact, with the push out of the column pending), exactly as set_state() would observe it."""
    env = _obstacle_env()
    _put_drone_in_first_column(env)
    obs, *_ = env.step(_hover(env))
    again = env.set_state([0], env.get_state([0]))
    assert torch.allclose(obs, again, atol=1e-6), (
        f"step obs p - g {obs[0, 0, :3].tolist()} but state gives {again[0, 0, :3].tolist()}"
    )


# ------------------------------------------------------------------------------------- reference layout


def test_reference_grid_places_truncated_fraction_of_all_cells_and_leaves_free_cells():
    og = ObstacleGrid((8, 8), 1.0, torch.device("cpu"), layout="reference", min_free=2)
    densities = torch.tensor([0.0, 0.2, 0.4, 0.8, 0.99])
    counts = og.num_obstacles(densities).tolist()
    assert counts == [0, 12, 25, 51, 62]  # int(64 d) as quad-swarm-rl, capped at 64 - min_free
    gen = torch.Generator().manual_seed(0)
    rows_hit = set()
    for _ in range(20):
        pos, occupied = og.sample(densities, max(counts), gen)
        assert occupied.sum(1).tolist() == counts
        act = pos[2][pos[2, :, 0].abs() < FAR / 2]
        rows_hit |= {round(y + 3.5) for y in act[:, 1].tolist()}
    assert {0, 7} <= rows_hit, "the reference layout may place columns in the first and last rows"


def test_reference_layout_spreads_starts_and_goals_over_free_cells():
    cfg = make_config(num_drones=8, scenario="o_random", density=0.8, dynamics={"thrust_noise": 0.0})
    assert cfg.layout == "reference"
    env = QuadSwarmVecEnv(cfg, num_envs=16)
    env.reset(seed=1)
    s = env.get_state(list(range(16)))
    start_cells = _nearest_cell(env.grid, s.pos[..., :2])  # [E, M]
    goal_cells = _nearest_cell(env.grid, s.goals[..., :2])
    for e in range(16):
        assert not s.occupied[e, start_cells[e]].any() and not s.occupied[e, goal_cells[e]].any()
        assert int(s.occupied[e].sum()) == 51
    rows = set((start_cells // env.grid.gx).flatten().tolist()) | set((goal_cells // env.grid.gx).flatten().tolist())
    assert len(rows) >= 6, f"starts and goals should use most rows, got {sorted(rows)}"


def test_layout_must_be_known():
    with pytest.raises(ValueError, match="layout.*allowed: reference, rows"):
        make_config(layout="grid")

