"""The batched quadrotor-swarm simulator: E environments x M drones stepped together on tensors.

Written by hand (the field's simulators step one environment at a time in Python/numba). This is
the vector API that trainers use; the PettingZoo and Gymnasium classes are thin views over it.

    env = QuadSwarmVecEnv(make_config(num_drones=8), num_envs=1024)
    obs = env.reset(seed=0)                        # [E, M, D]
    obs, rew, term, trunc, info = env.step(act)    # act [E, M, 4] in [-1, 1]

Episodes of all environments have the same length and reset automatically: when an environment's
episode ends, ``obs`` already holds its new first observation, ``info["final_obs"]`` the last one,
and ``info["episode"]`` the per-episode metrics of the environments ``info["episode_env_ids"]``.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from envs.config import SwarmConfig
from envs.dynamics import Dynamics
from envs.maps import FAR, ObstacleGrid, local_sdf, sample_free_slots, sample_slots, sdf_normal
from envs.metrics import LAST_SECONDS, episode_metrics
from envs.observations import ObsSpec, build_observation, nearest_neighbours, obs_spec
from envs.rewards import swarm_reward
from envs.scenarios import SCENARIO_NAMES, SCENARIOS
from envs.state import SimState

ACTION_DIM = 4


class Physics(Protocol):
    """What steps the vehicles: the batched :class:`envs.dynamics.Dynamics` or another engine (PyBullet).

    Scenarios, maps, observations, rewards and metrics stay in QuadSwarmVecEnv whatever the engine.
    """

    def step(self, live: SimState, cmd: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One physics step of the live state under thrust fractions cmd [4, M, E]; (on_floor, wall) [M, E]."""
        ...

    def on_reset(self, live: SimState, env_ids: torch.Tensor) -> None:
        """The live state of env_ids was (re)initialised: rebuild the engine's copy of it."""
        ...

    def contacts(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Engine-detected (neighbour [M, M, E], column [M, E]) collisions, or None to use distances."""
        ...


class QuadSwarmVecEnv:
    """Batched swarm simulator with auto-reset. All tensors live on ``device``.

    ``physics`` replaces the batched dynamics with another engine (see :class:`Physics`); an engine
    that reports its own contacts also resolves them, so the built-in collision response is skipped.
    """

    act_dim = ACTION_DIM  # continuous motor commands per drone
    num_actions = None  # (not a discrete action space)

    def __init__(
        self,
        cfg: SwarmConfig,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        physics: Physics | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        self.cfg = cfg
        self.num_envs = num_envs
        self.num_drones = self.num_agents = cfg.num_drones
        self.device = torch.device(device)
        self.spec: ObsSpec = obs_spec(cfg.num_neighbors, cfg.leaders)
        self.obs_dim = self.spec.dim
        self.dyn = Dynamics(cfg.dynamics, cfg.room, self.device)
        self.physics: Physics = physics if physics is not None else self.dyn
        self.grid = ObstacleGrid(cfg.grid, cfg.cell_size, self.device, cfg.layout, cfg.min_free_cells)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(0)
        self.collision_scale = 1.0

        d = self.device
        dyn = cfg.dynamics
        self.ctrl_dt = dyn.control_dt
        self.episode_steps = cfg.episode_steps
        self.grace_steps = int(round(cfg.grace_seconds / self.ctrl_dt))
        self.ortho_every = max(1, int(round(dyn.orthonormalize_seconds / self.ctrl_dt)))
        self.event_steps = max(1, int(round(cfg.goal_change_seconds / self.ctrl_dt)))
        last = [min(self.episode_steps, int(round(s / self.ctrl_dt))) for s in LAST_SECONDS]
        self.last_steps = torch.tensor(last, device=d)
        self.window_steps = self.last_steps.float()
        self.heights = torch.tensor(cfg.spawn_heights, device=d)
        angles = torch.arange(cfg.num_drones, device=d) * (2 * math.pi / cfg.num_drones)
        self.circle = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles)], -1)  # [M, 3]

        names = list(cfg.scenario_weights)
        self.mix_ids = torch.tensor([SCENARIOS[n].id for n in names], device=d)
        self.mix_probs = torch.tensor([cfg.scenario_weights[n] for n in names], device=d)
        per_id = lambda f: torch.tensor([f(SCENARIOS[n]) for n in SCENARIO_NAMES], device=d)  # noqa: E731
        self.sc_obstacles = per_id(lambda s: s.obstacles)
        self.sc_formation = per_id(lambda s: s.formation)
        self.sc_reach = per_id(lambda s: s.reach_threshold)
        self.sc_event = {ev: per_id(lambda s, ev=ev: s.event == ev) for ev in ("move", "swap", "resize")}
        self.sc_row_goals = per_id(lambda s: s.row_goals)
        self.sc_hover = per_id(lambda s: s.hover)
        self.has_events = any(SCENARIOS[n].event for n in names)

        rnd = cfg.randomization
        densities = rnd.density_range or (cfg.density, cfg.density)
        self.max_obstacles = max(1, int(self.grid.num_obstacles(torch.tensor(max(densities))).item()))
        sigma = torch.zeros(self.obs_dim, device=d)
        nz = cfg.noise
        sigma[0:3], sigma[3:6], sigma[15:18], sigma[18] = nz.position, nz.velocity, nz.gyro, nz.position
        self.noise_sigma = sigma
        # Live state in the working layout (see envs.state); snapshots go through get/set_state.
        self.live = self._empty_state().to_live()
        self._pending = False  # whether live.dpos / live.dvel hold a collision response to apply
        self._obs: torch.Tensor | None = None

    # ------------------------------------------------------------------ public API
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every environment; returns obs [E, M, D]. ``seed`` reseeds the generator."""
        if seed is not None:
            self.gen.manual_seed(int(seed))
        self._reset_envs(torch.arange(self.num_envs, device=self.device))
        self._obs = self._observe()[0]
        return self._obs

    def step(self, actions: torch.Tensor):
        """Advance one control step (sim_steps physics steps).

        actions: [E, M, 4] in [-1, 1] (values outside are clipped; NaN/inf and wrong shapes raise).
        Returns obs [E, M, D], rewards [E, M], terminated [E, M], truncated [E, M], info.
        """
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        act = self._check_actions(actions).permute(2, 1, 0).contiguous()  # [4, M, E]
        s = self.live
        if self._pending:  # the collision response decided at the last observation
            s.pos.add_(s.dpos)
            s.vel.add_(s.dvel)
            s.dpos.zero_()
            s.dvel.zero_()
            self._pending = False
        cmd = self.dyn.noisy_command((0.5 * (act + 1.0)).clamp_(0.0, 1.0), s.ou, self.gen)
        on_floor = wall = None
        for _ in range(self.cfg.dynamics.sim_steps):
            floor_hit, wall_hit = self.physics.step(s, cmd, self.gen)
            on_floor = floor_hit if on_floor is None else on_floor | floor_hit
            wall = wall_hit if wall is None else wall | wall_hit
        s.t += 1
        due = s.t % self.ortho_every == 0  # per env, so that a restored env replays exactly
        if bool(due.any()):
            s.rot.copy_(torch.where(due, self.dyn.orthonormalized(s.rot), s.rot))
        if self.has_events:
            self._goal_events()

        obs, geometry = self._observe()
        reward = self._score(act, on_floor, wall, *geometry)
        done = s.t >= self.episode_steps
        terminated = torch.zeros(self.num_envs, self.num_drones, dtype=torch.bool, device=self.device)
        truncated = done.unsqueeze(-1).expand(-1, self.num_drones).clone()
        info: dict = {}
        if bool(done.any()):
            ids = done.nonzero().squeeze(-1)
            info["final_obs"] = obs
            info["episode"] = episode_metrics(s, ids, self.window_steps, self.ctrl_dt)
            info["episode_env_ids"] = ids
            info["scenario"] = [SCENARIO_NAMES[i] for i in s.scenario[ids].tolist()]
            self._reset_envs(ids)
            obs = self._observe()[0]
        self._obs = obs
        return obs, reward.T.contiguous(), terminated, truncated, info

    def get_state(self, env_ids: torch.Tensor | list[int]) -> SimState:
        """Snapshot (detached copy, env axis first) of the full state of the chosen environments."""
        return self.live.select_live(torch.as_tensor(env_ids, device=self.device))

    def set_state(self, env_ids: torch.Tensor | list[int], snapshot: SimState) -> torch.Tensor:
        """Restore the chosen environments from a snapshot; returns the new obs [E, M, D]."""
        ids = torch.as_tensor(env_ids, device=self.device)
        self.live.assign_live(ids, snapshot)
        self._pending = True  # the snapshot may carry a pending collision response
        self.physics.on_reset(self.live, ids)
        self._obs = self._observe()[0]
        return self._obs

    def set_collision_scale(self, scale: float) -> None:
        """Scale of the collision penalties in [0, 1] (the trainer anneals it)."""
        if not 0.0 <= scale <= 1.0:
            raise ValueError(f"collision_scale={scale} must lie in [0, 1]")
        self.collision_scale = float(scale)

    # ------------------------------------------------------------------ internals
    def _check_actions(self, actions) -> torch.Tensor:
        actions = torch.as_tensor(actions, device=self.device)
        want = (self.num_envs, self.num_drones, ACTION_DIM)
        if tuple(actions.shape) != want:
            raise ValueError(f"actions must have shape {list(want)} (envs, drones, motors), got {list(actions.shape)}")
        if not actions.is_floating_point():
            raise TypeError(f"actions must be floating point, got {actions.dtype}")
        actions = actions.to(torch.float32)
        if not bool(torch.isfinite(actions).all()):
            bad = (~torch.isfinite(actions)).nonzero()[0].tolist()
            raise ValueError(
                f"actions contain NaN or inf (first at [env, drone, motor] = {bad}); allowed: finite values in [-1, 1]"
            )
        return actions

    def _empty_state(self) -> SimState:
        """An all-zero snapshot of E envs in the env-first layout (filled by the first reset)."""
        e, m, d = self.num_envs, self.num_drones, self.device
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=d)  # noqa: E731
        b = lambda *shape: z(*shape, dtype=torch.bool)  # noqa: E731
        return SimState(
            pos=z(e, m, 3), vel=z(e, m, 3), rot=torch.eye(3, device=d).expand(e, m, 3, 3).clone(), omega=z(e, m, 3),
            motor=z(e, m, 4), ou=z(e, m, 4), mass=z(e, m), inertia=z(e, m, 3), max_thrust=z(e, m),
            scenario=z(e, dtype=torch.long), goals=z(e, m, 3), goal_center=z(e, 3), goal_scale=z(e),
            obstacles=torch.full((e, self.max_obstacles, 2), FAR, device=d), obstacle_radius=z(e),
            occupied=b(e, self.grid.centres.shape[0]), t=z(e, dtype=torch.long),
            prev_nbr_col=b(e, m, m), prev_obs_col=b(e, m), ret=z(e, m), reached=b(e, m),
            dist_window=z(e, m, self.cfg.reach_window), col_nbr=b(e, m), col_obs=b(e, m),
            col_floor=b(e, m), col_wall=b(e, m), dist_last=z(e, m, 3), dpos=z(e, m, 3), dvel=z(e, m, 3),
            arrive_t=torch.full((e, m), math.inf, device=d),
        )

    def _uniform(self, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=self.gen, device=self.device)

    def _reset_envs(self, ids: torch.Tensor) -> None:
        cfg, n, m = self.cfg, ids.numel(), self.num_drones
        g = self.gen
        scen = self.mix_ids[torch.multinomial(self.mix_probs, n, replacement=True, generator=g)]
        obstacles_on = self.sc_obstacles[scen]

        # Obstacle map.
        rnd = cfg.randomization
        lo_d, hi_d = rnd.density_range or (cfg.density, cfg.density)
        lo_s, hi_s = rnd.size_range or (cfg.obstacle_size, cfg.obstacle_size)
        density = self._uniform(n, lo_d, hi_d) * obstacles_on
        obst, occupied = self.grid.sample(density, self.max_obstacles, g)
        radius = self._uniform(n, lo_s, hi_s) / 2

        # Starts in obstacle maps: free-cell slots (reference layout) or start-row slots (rows layout);
        # anywhere on the grid otherwise.
        reference = cfg.layout == "reference"
        centres = self.grid.centres
        if reference:
            map_starts = sample_free_slots(centres, occupied, self.heights, m, cfg.spawn_jitter, g)
        else:
            map_starts = sample_slots(centres[self.grid.start_row], self.heights, n, m, cfg.spawn_jitter, g)
        free_starts = sample_slots(centres, self.heights, n, m, cfg.spawn_jitter, g)
        starts = torch.where(obstacles_on.view(-1, 1, 1), map_starts, free_starts)

        # Goals: a formation around a centre (in obstacle maps a free cell centre, or a goal-row cell
        # centre in the rows layout); distinct free-cell / goal-row slots for o_random / o_swap_goals.
        scale = self.sc_formation[scen] * cfg.formation_size
        centre = torch.cat([self._uniform(n, -2.0, 2.0, 2), self._uniform(n, 1.5, 2.5, 1)], -1)
        goal_row = centres[self.grid.goal_row]
        if reference:
            map_centre = self.grid.random_free_cell(occupied, g)
        else:
            map_centre = goal_row[torch.randint(goal_row.shape[0], (n,), generator=g, device=self.device)]
        centre = torch.where(obstacles_on.unsqueeze(-1), torch.cat([map_centre, centre[:, 2:]], -1), centre)
        goals = centre.unsqueeze(1) + scale.view(-1, 1, 1) * self.circle
        distinct = self.sc_row_goals[scen]
        if reference:
            map_goals = sample_free_slots(centres, occupied, self.heights, m, 0.0, g)
        else:
            map_goals = sample_slots(goal_row, self.heights, n, m, 0.0, g)
        goals = torch.where(distinct.view(-1, 1, 1), map_goals, goals)
        hover = self.sc_hover[scen]
        goals = torch.where(hover.view(-1, 1, 1), starts, goals)

        flags = lambda *shape: torch.zeros(*shape, dtype=torch.bool, device=self.device)  # noqa: E731
        # Vehicles, with per-drone randomisation of mass, inertia and thrust.
        dyn = cfg.dynamics
        mass = dyn.mass * self._uniform(n, 1 - rnd.mass, 1 + rnd.mass, m)
        inertia = torch.tensor(dyn.inertia, device=self.device)
        inertia = inertia * self._uniform(n, 1 - rnd.inertia, 1 + rnd.inertia, m, 1)
        tw = dyn.thrust_to_weight * self._uniform(n, 1 - rnd.thrust_to_weight, 1 + rnd.thrust_to_weight, m)
        max_thrust = tw * mass * dyn.gravity / 4.0

        fresh = SimState(
            pos=starts, vel=torch.zeros_like(starts), rot=torch.eye(3, device=self.device).expand(n, m, 3, 3).clone(),
            omega=torch.zeros_like(starts), motor=(1.0 / tw).sqrt().unsqueeze(-1).expand(n, m, 4).clone(),
            ou=torch.zeros(n, m, 4, device=self.device), mass=mass, inertia=inertia, max_thrust=max_thrust,
            scenario=scen, goals=goals, goal_center=centre, goal_scale=scale, obstacles=obst,
            obstacle_radius=radius, occupied=occupied, t=torch.zeros(n, dtype=torch.long, device=self.device),
            prev_nbr_col=flags(n, m, m), prev_obs_col=flags(n, m), ret=torch.zeros(n, m, device=self.device),
            reached=flags(n, m), dist_window=torch.full((n, m, cfg.reach_window), math.inf, device=self.device),
            col_nbr=flags(n, m), col_obs=flags(n, m), col_floor=flags(n, m), col_wall=flags(n, m),
            dist_last=torch.zeros(n, m, 3, device=self.device), dpos=torch.zeros_like(starts),
            dvel=torch.zeros_like(starts), arrive_t=torch.full((n, m), math.inf, device=self.device),
        )
        self.live.assign_live(ids, fresh)
        self.physics.on_reset(self.live, ids)

    def _goal_events(self) -> None:
        s = self.live
        due = (s.t % self.event_steps == 0) & (s.t < self.episode_steps)
        if not bool(due.any()):
            return
        for ev, mask in self.sc_event.items():
            ids = (due & mask[s.scenario]).nonzero().squeeze(-1)
            if ids.numel() == 0:
                continue
            n = ids.numel()
            if ev == "swap":
                s.goals[..., ids] = s.goals[..., ids].flip(1)
                continue
            centre, scale = s.goal_center[:, ids].T, s.goal_scale[ids]  # [n, 3], [n]
            if ev == "move":
                free = torch.cat([self._uniform(n, -2.0, 2.0, 2), self._uniform(n, 1.5, 2.5, 1)], -1)
                cell = self.grid.random_free_cell(s.occupied[:, ids].T, self.gen)
                obst = self.sc_obstacles[s.scenario[ids]].unsqueeze(-1)
                centre = torch.where(obst, torch.cat([cell, free[:, 2:]], -1), free)
            else:  # resize
                scale = self.cfg.formation_size * self._uniform(n, 0.5, 2.0)
            s.goal_center[:, ids], s.goal_scale[ids] = centre.T, scale
            goals = centre.unsqueeze(1) + scale.view(-1, 1, 1) * self.circle  # [n, M, 3]
            s.goals[..., ids] = goals.permute(2, 1, 0)

    def _observe(self):
        """Observation [E, M, D] of the live state, and the geometry that scoring reuses."""
        cfg, s = self.cfg, self.live
        rel_pos = s.pos.unsqueeze(1) - s.pos.unsqueeze(2)  # [3, M(i), M(j), E]: p_j - p_i
        dist = (rel_pos * rel_pos).sum(0).sqrt_()  # [M, M, E]
        dist.diagonal(dim1=0, dim2=1).fill_(math.inf)
        neighbours = None
        if cfg.num_neighbors > 0:
            neighbours = nearest_neighbours(s.pos, s.vel, rel_pos, dist, cfg.num_neighbors)
        sdf = local_sdf(s.pos, s.obstacles, s.obstacle_radius, cfg.sdf_resolution).clamp_max_(cfg.sdf_max)
        obs = build_observation(s.pos, s.vel, s.rot, s.omega, s.goals, neighbours, sdf, cfg.leaders)
        if cfg.noise.enabled:
            obs = obs + self.noise_sigma * torch.randn(obs.shape, generator=self.gen, device=self.device)
        return obs, (rel_pos, dist, sdf)

    def _score(self, act, on_floor, wall, rel_pos, dist, sdf) -> torch.Tensor:
        """Collisions, reward [M, E] and metric updates.

        The collision response (a crude but cheap one) is decided here from the observed geometry and
        stored in the state (dpos, dvel); the next step applies it before its physics. The returned
        observation and get_state() thus both describe the moment of contact, and a new observation
        pass is never needed for it.
        """
        cfg, s = self.cfg, self.live
        arm = cfg.dynamics.arm
        contacts = self.physics.contacts()
        if contacts is None:
            nbr_col = dist <= 2 * arm  # [M, M, E]
            obs_col = sdf[4] <= arm  # the drone's own SDF value: 2-D distance to the nearest column surface
        else:
            nbr_col, obs_col = contacts
        new_nbr = nbr_col & ~s.prev_nbr_col
        new_obs = obs_col & ~s.prev_obs_col
        if contacts is None and bool(new_nbr.any()):
            self._bounce_neighbours(rel_pos, dist, new_nbr)
            self._pending = True
        if contacts is None and bool(obs_col.any()):
            self._push_out_of_columns(sdf, obs_col)
            self._pending = True
        s.prev_nbr_col.copy_(nbr_col)
        s.prev_obs_col.copy_(obs_col)

        to_goal = s.pos - s.goals
        dist_to_goal = (to_goal * to_goal).sum(0).sqrt()  # [M, E]
        reward = swarm_reward(
            cfg.reward, self.ctrl_dt, arm, dist_to_goal, act, on_floor, s.rot[2, 2], s.omega,
            dist, new_nbr.sum(1), new_obs, self.collision_scale,
        )
        s.ret += reward
        s.dist_window = torch.cat([s.dist_window[1:], dist_to_goal.unsqueeze(0)])
        # Time to goal: the first step within the reach radius (inf until then), so min() keeps the first.
        reach = self.sc_reach[s.scenario]  # [E]
        arrived = torch.where(dist_to_goal < reach, s.t.float(), math.inf)
        torch.minimum(s.arrive_t, arrived, out=s.arrive_t)
        after_grace = s.t > self.grace_steps  # [E]
        # Counted after the grace period only, so that a start on the goal (hover) is no success.
        s.reached |= (s.dist_window.mean(0) < reach) & after_grace
        s.col_nbr |= nbr_col.any(1) & after_grace
        s.col_obs |= obs_col & after_grace
        s.col_floor |= on_floor & after_grace
        s.col_wall |= wall & after_grace
        in_last = s.t > self.episode_steps - self.last_steps.view(3, 1)  # [3, E]
        s.dist_last += dist_to_goal * in_last.unsqueeze(1)
        return reward

    def _bounce_neighbours(self, rel_pos, dist, new_col) -> None:
        """Exchange the normal velocity components of newly colliding pairs (equal masses, elastic)."""
        s = self.live
        n = rel_pos / dist.clamp_min(1e-6)  # [3, M, M, E] from i towards j
        closing = ((s.vel.unsqueeze(1) - s.vel.unsqueeze(2)) * n).sum(0)  # [M, M, E]
        s.dvel += (closing * new_col * n).sum(2)

    def _push_out_of_columns(self, sdf, obs_col) -> None:
        """Move drones inside a column back to its surface and reflect the inward velocity."""
        s = self.live
        normal = sdf_normal(sdf, self.cfg.sdf_resolution)  # [2, M, E] from the column to the drone
        depth = (self.cfg.dynamics.arm - sdf[4]).clamp_min(0.0) * obs_col
        s.dpos[:2] += normal * depth
        inward = (s.vel[:2] * normal).sum(0).clamp_max(0.0) * obs_col
        s.dvel[:2] -= (1.0 + self.cfg.dynamics.wall_restitution) * inward * normal
