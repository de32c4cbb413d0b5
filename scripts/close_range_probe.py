"""Where a student's neighbour collisions come from: the shield hand-over distance, and the close-range fit.

    .venv/bin/python scripts/close_range_probe.py --policy zoo:swarm8_obstacles --json runs/close_range.json

1. Shield sweep: fly ``--policy`` with ``pid_avoid`` taking over each drone while the body gap to its nearest
   observed neighbour is below g (agents.shield), for every g of ``--gaps`` (0: no hand-over), ``--envs``
   swarms at ``--density``, tuning seed 500 (8 drones, 0.6 m columns, the obstacle recipe's env).
2. Close-range fit: states within ``--close`` m of a neighbour from student-flown swarms (seeds 600 for
   training, 700 held out), labelled by ``pid_avoid``: the policy's mean squared error on them, and that of a
   fresh deployable student fitted only to them (Adam, ``--fit-steps`` minibatches of 128), for each number of
   training swarms in ``--train-swarms``.
3. Learned expert: the last of those fresh students flies in the fallback's place (the policy far from
   neighbours, the close-range student within ``--close`` m of one: two learned networks and a fixed gate),
   beside the policy alone and the policy with the ``pid_avoid`` shield, on ``--eval-seed`` (held out: 1000)
   at every density of ``--eval-densities``.
4. Input features (``features``): on the same close states, fresh deployable students whose neighbour tokens
   also get polar features (unit direction, distance, 1 / distance, closing speed: ``polar``), whose head
   also reads the nearest neighbour's token past the attention (``skip``), or both, against the plain one.
5. Contacts (``contacts``): fly ``--policy`` and ``pid_avoid`` (``--envs`` swarms, tuning seed 500, every
   density of ``--eval-densities``) and describe each drone's first neighbour or column contact after the
   grace period: the speed at which it closed in over the last 0.1 s, and, for a close-range actor, which
   network flew the drone then and for how many steps a gated one had flown it before the contact.
6. Capacity (``capacity``): for a close-range ``--policy``, the states its near gate picks in ``--train-swarms``'s
   last number of swarms flown by it in the recipe's own env (``swarm_dense_close``: densities 0.2-0.8,
   0.6-0.8 m columns; seed 600, 64 more held out at seed 700), labelled by ``pid_avoid``: the near network's
   error on them, and that of fresh near networks of three widths fitted to them alone (``--fit-steps``).
7. Anatomy (``anatomy``): fly ``--policy`` and ``pid_avoid`` (``--envs`` swarms at every density of
   ``--eval-densities``, episode seed ``--anatomy-seed``: the tuning seed 500 unless given) and describe each
   drone's flight by its outcome (arrived; touched a neighbour; a column; stalled: neither arrived nor
   touched): how far its goal lay, its progress towards it (m/s: the distance it closed over the time to
   arrival, or over the whole flight when it did not arrive), and for a close-range actor the steps each
   network flew it and how often its gate switched (for ``pid_avoid``: the steps it spent within each of the
   policy's gates). ``--column-blend lo,hi`` also flies the policy with its column gate made a linear blend
   (the column network's action below lo m of SDF, the far network's above hi, mixed between; no refit).
``--parts`` picks among shield, fit, expert, features, contacts, capacity and anatomy. Prints one JSON line per result;
``--json`` writes them all.
Figures: docs/training.md, "Where the neighbour collisions come from", "The near gate's width" and "Where the
remaining failures happen".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agents.checkpoint import load_policy
from agents.close_range import ActionHead
from agents.controllers import make_controller
from agents.layers import mlp, split_obs
from agents.shield import Shield, nearest_gap
from agents.swarm_attention import SwarmAttentionEncoder
from envs.config import SwarmConfig
from envs.evaluation import as_controller, evaluate_swarm
from envs.swarm import QuadSwarmVecEnv
from marl.evaluate import eval_config
from marl.imitation import ImitationData, fit, make_student, rollout, student_actions
from marl.train_config import resolve_config


def env_config(density: float) -> SwarmConfig:
    """The obstacle recipe's env at one density, 8 drones, 0.6 m columns."""
    base = resolve_config("swarm8_obstacles_dagger").env
    return eval_config(None, drones=8, density=density, base=base, obstacle_size=0.6)


def shield_row(policy, cfg: SwarmConfig, gap: float, envs: int) -> dict:
    """Metrics of ``policy`` with the fallback below ``gap`` (none for gap 0), seed 500."""
    flown = as_controller(policy)
    if gap > 0:
        shield = Shield(flown, make_controller("pid_avoid", cfg.dynamics), gap=gap, reset=flown.reset)
        flown = as_controller(shield)
    report, _ = evaluate_swarm(flown, cfg, episodes=envs, seed=500)
    keys = ("success_rate", "neighbour_collision_rate", "obstacle_collision_rate", "deadlock_rate")
    out = {"gap": gap, **{k: round(report[k], 4) for k in keys}}
    if gap > 0:
        out["fallback_share"] = round(shield.taken / shield.steps, 4)
    return out


def close_states(policy, cfg: SwarmConfig, swarms: int, seed: int, close: float) -> tuple[ImitationData, torch.Tensor]:
    """Every step of ``swarms`` swarms flown by ``policy``, labelled by pid_avoid, where some drone is within
    ``close`` m of a neighbour; with the mask [N, M] of the drones that are."""
    data = rollout(cfg, "pid_avoid", policy, beta=0.0, num_envs=swarms, record_every=1, seed=seed).data
    near = nearest_gap(data.obs, cfg.dynamics.arm) < close
    rows = near.any(-1)
    return ImitationData(data.obs[rows], data.actions[rows]), near[rows]


def close_error(student, data: ImitationData, near: torch.Tensor) -> float:
    """Mean squared action error over the close drones."""
    with torch.no_grad():
        err = ((student_actions(student, data.obs) - data.actions) ** 2).mean(-1)
    return round(float(err[near].mean()), 4)


def polar_features(nbs: torch.Tensor) -> torch.Tensor:
    """Neighbour tokens [N, K, 6] -> [N, K, 12]: p, v, then p / |p|, |p|, 1 / max(|p|, 0.1), v . p / |p|."""
    p, v = nbs[..., :3], nbs[..., 3:6]
    dist = p.norm(dim=-1, keepdim=True)
    u = p / dist.clamp_min(1e-6)
    return torch.cat([nbs, u, dist, 1.0 / dist.clamp_min(0.1), (v * u).sum(-1, keepdim=True)], -1)


class FeatureEncoder(SwarmAttentionEncoder):
    """The deployable encoder with the polar neighbour features and / or the nearest neighbour's skip path."""

    use_polar = False
    use_skip = False

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        own, nbs, sdf = split_obs(obs, self.layout)
        e_self = self.self_embed(own)
        toks = self.neighbour_embed(polar_features(nbs) if self.use_polar else nbs)
        tokens = torch.cat([toks, self.obstacle_embed(sdf).unsqueeze(1)], 1)
        ctx = self.norm(e_self + self.attention(e_self.unsqueeze(1), tokens).squeeze(1))
        return self.head(torch.cat([e_self, ctx] + ([toks[:, 0]] if self.use_skip else []), -1))


def feature_student(cfg: SwarmConfig, variant: str) -> torch.nn.Module:
    """A fresh deployable student (seed 0) with the encoder of ``variant`` (plain, polar, skip, polar+skip)."""
    student = make_student("attention", cfg, seed=0)
    torch.manual_seed(100)
    for enc in [m for m in student.modules() if isinstance(m, SwarmAttentionEncoder)]:
        enc.__class__ = FeatureEncoder
        enc.use_polar, enc.use_skip = "polar" in variant, "skip" in variant
        width = enc.norm.normalized_shape[0]
        if enc.use_polar:
            enc.neighbour_embed = mlp(12, [width] * 2)
        if enc.use_skip:
            enc.head = mlp(3 * width, (32,))
    return student


CAPACITY_WIDTHS = {"deployable": {}, "embed 32, head 64": {"embed_dim": 32, "hidden_sizes": (64,)},
                   "embed 64, head 128": {"embed_dim": 64, "hidden_sizes": (128,)}}


def capacity_rows(policy, swarms: int, fit_steps: int) -> list[dict]:
    """The near network's error on its own gated states against fresh near networks of ``CAPACITY_WIDTHS``."""
    actor = policy.actor
    cfg = resolve_config("swarm_dense_close").env
    near = lambda obs: actor.gates(obs)["near"]  # noqa: E731

    def gated(seed: int, n: int) -> tuple[ImitationData, torch.Tensor]:
        data = rollout(cfg, "pid_avoid", policy, beta=0.0, num_envs=n, record_every=1, seed=seed,
                       record_if=lambda obs: near(obs).any(-1)).data
        return data, near(data.obs)

    @torch.no_grad()
    def error(head, data: ImitationData, mask: torch.Tensor) -> float:
        return round(float((head(data.obs) - data.actions).square().mean(-1)[mask].mean()), 4)

    (train, m_train), (test, m_test) = gated(600, swarms), gated(700, 64)
    rows = [{"probe": "capacity", "network": "the policy's near network", "train": error(actor.near, train, m_train),
             "held_out": error(actor.near, test, m_test), "drone_steps": int(m_train.sum())}]
    for name, kwargs in CAPACITY_WIDTHS.items():
        torch.manual_seed(0)
        head = ActionHead(SwarmAttentionEncoder.from_preset(actor.layout, "deployable", **kwargs), 4)
        fit(head, train, optimizer="adam", steps=fit_steps, batch=128, lr=1e-3, eval_every=fit_steps, seed=0,
            sample_weight=lambda obs: near(obs).float())
        params = sum(p.numel() for p in head.parameters())
        rows.append({"probe": "capacity", "network": f"fresh, {name}", "parameters": params,
                     "train": error(head, train, m_train), "held_out": error(head, test, m_test)})
    return rows


def gate_codes(gates: dict[str, torch.Tensor]) -> torch.Tensor:
    """The network a close-range actor's ``gates`` pick per agent, [E, M] int64: 0 far, then 1, 2 in gate order
    (near, column)."""
    which = torch.zeros(next(iter(gates.values())).shape, dtype=torch.long)
    for code, name in enumerate(gates, start=1):
        which[gates[name]] = code
    return which


@torch.no_grad()
def contact_rows(flown, cfg: SwarmConfig, envs: int, seed: int, actor=None) -> list[dict]:
    """Each drone's first neighbour / column contact after the grace period when ``flown`` flies ``envs``
    swarms of ``cfg``: kind, closing speed over the last 10 steps (m/s: the drop of the centre distance to
    the nearest drone, or of the column clearance), and with a close-range ``actor`` the network that flew
    the drone at the contact and the steps a gated one had flown it without a break before."""
    env = QuadSwarmVecEnv(cfg, num_envs=envs)
    obs = env.reset(seed=seed)
    ctrl = as_controller(flown)
    lag, dt = 10, cfg.dynamics.control_dt
    gap_hist: list[torch.Tensor] = []
    clear_hist: list[torch.Tensor] = []
    gated_for = torch.zeros(envs, cfg.num_drones, dtype=torch.long)
    which = torch.zeros(envs, cfg.num_drones, dtype=torch.long)  # 0 far, 1 near, 2 column
    seen = {"neighbour": torch.zeros(envs, cfg.num_drones, dtype=torch.bool)}
    seen["column"] = seen["neighbour"].clone()
    rows = []
    while True:
        pos = env.live.pos.permute(2, 1, 0)  # [E, M, 3]
        centre = (pos.unsqueeze(2) - pos.unsqueeze(1)).norm(dim=-1)
        centre += torch.eye(cfg.num_drones) * 1e3
        gap_hist = [*gap_hist, centre.amin(-1)][-lag:]
        clear_hist = [*clear_hist, obs[..., -5]][-lag:]  # the 3 x 3 SDF's centre: the nearest column's surface
        if actor is not None:
            gates = actor.gates(obs)
            which = gate_codes(gates)
            gated_for = torch.where(which > 0, gated_for + 1, torch.zeros_like(gated_for))
        obs, _, _, _, info = env.step(ctrl(obs))
        if "episode" in info:
            return rows
        live = env.live
        for kind, flags, hist in (("neighbour", live.col_nbr.T, gap_hist), ("column", live.col_obs.T, clear_hist)):
            for e, m in (flags & ~seen[kind]).nonzero().tolist():
                closing = float(hist[0][e, m] - hist[-1][e, m]) / ((len(hist) - 1) * dt)
                row = {"kind": kind, "closing_speed": round(closing, 2)}
                if actor is not None:
                    row.update(network=("far", *gates)[int(which[e, m])], gated_steps=int(gated_for[e, m]))
                rows.append(row)
            seen[kind] |= flags


def blended(policy, lo: float, hi: float):
    """``policy`` (a close-range actor's, deterministic) with its column gate a blend: obs [E, M, D] -> actions."""
    actor = policy.actor
    far_forward = super(type(actor), actor).forward  # the far network alone (GaussianActor.forward)

    @torch.no_grad()
    def act(obs: torch.Tensor) -> torch.Tensor:
        far = far_forward(obs)
        w = ((hi - obs[..., -5]) / (hi - lo)).clamp(0.0, 1.0).unsqueeze(-1)  # SDF centre: the column's surface
        mean = far + w * (actor.column(obs) - far)
        mean = torch.where(actor.gates(obs)["near"].unsqueeze(-1), actor.near(obs), mean)
        return mean

    return act


@torch.no_grad()
def anatomy_rows(flown, cfg: SwarmConfig, envs: int, seed: int, actor=None) -> list[dict]:
    """One row per outcome (arrived, neighbour, column, stalled) of the drones ``flown`` flies in ``envs`` swarms
    of ``cfg``: drones, mean start-to-goal distance (m), progress towards the goal (m/s, to arrival or over the whole
    flight), and with a close-range ``actor`` the mean steps its gates picked each network (the one that flew them,
    when ``flown`` is that actor's policy) and gate switches per drone."""
    env = QuadSwarmVecEnv(cfg, num_envs=envs)
    obs = env.reset(seed=seed)
    ctrl = as_controller(flown)
    m = cfg.num_drones
    first = env.get_state(list(range(envs)))
    trip = (first.pos - first.goals).norm(dim=-1)  # [E, M]
    grace = round(cfg.grace_seconds / cfg.dynamics.control_dt)
    touched = {k: torch.zeros(envs, m, dtype=torch.bool) for k in ("neighbour", "column")}
    steps = torch.zeros(envs, m, 3)  # far, near, column
    switches = torch.zeros(envs, m)
    arrival = torch.zeros(envs, m)  # steps to the first arrival (0: not yet)
    which = None
    t = 0
    while True:
        if actor is not None:
            now = gate_codes(actor.gates(obs))
            steps.scatter_add_(2, now.unsqueeze(-1), torch.ones(envs, m, 1))
            switches += 0 if which is None else (now != which).float()
            which = now
        obs, _, _, _, info = env.step(ctrl(obs))
        if "episode" in info:
            break
        t += 1
        live = env.live
        if t > grace:
            touched["neighbour"] |= live.col_nbr.T
            touched["column"] |= live.col_obs.T
        # The live state (env axis last), read in place: the last step auto-resets, so keep what it ended with.
        reached = live.reached.T.clone()
        left = (live.pos - live.goals).norm(dim=0).T
        arrival = torch.where(reached & (arrival == 0), torch.full_like(arrival, t), arrival)
    dt = cfg.dynamics.control_dt
    progress = torch.where(reached, trip / (arrival * dt).clamp_min(dt), (trip - left) / (t * dt))
    outcome = {"arrived": reached & ~touched["neighbour"] & ~touched["column"], "neighbour": touched["neighbour"],
               "column": touched["column"] & ~touched["neighbour"],
               "stalled": ~reached & ~touched["neighbour"] & ~touched["column"]}
    rows = []
    for name, mask in outcome.items():
        row = {"outcome": name, "drones": int(mask.sum())}
        if mask.any():
            row.update(trip_m=round(float(trip[mask].mean()), 2), progress_m_s=round(float(progress[mask].mean()), 3))
            if actor is not None:
                row.update(steps_far_near_column=[round(float(v), 1) for v in steps[mask].mean(0)],
                           gate_switches=round(float(switches[mask].mean()), 1))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="zoo:swarm8_obstacles")
    parser.add_argument("--density", type=float, default=0.6)
    parser.add_argument("--envs", type=int, default=128, help="swarms per shield row")
    parser.add_argument("--gaps", default="0,0.1,0.2,0.3,0.5")
    parser.add_argument("--close", type=float, default=0.2, help="m of body gap that counts as close")
    parser.add_argument("--train-swarms", default="128,768")
    parser.add_argument("--fit-steps", type=int, default=6000)
    parser.add_argument("--parts", default="shield,fit,expert")
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--eval-densities", default="0.2,0.4,0.6,0.8")
    parser.add_argument("--anatomy-seed", type=int, default=500, help="episode seed of the anatomy part")
    parser.add_argument("--column-blend", help="lo,hi (m): anatomy also flies the policy with a blended column gate")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = env_config(args.density)
    policy = load_policy(args.policy)
    results = []

    def emit(row: dict) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)

    parts = args.parts.split(",")
    for gap in (float(g) for g in args.gaps.split(",")) if "shield" in parts else ():
        emit({"probe": "shield", **shield_row(policy, cfg, gap, args.envs)})
    student = None
    fitting = bool({"fit", "expert", "features"} & set(parts))
    if fitting:
        test, test_near = close_states(policy, cfg, 64, 700, args.close)
    for swarms in (int(n) for n in args.train_swarms.split(",")) if fitting else ():
        train, near = close_states(policy, cfg, swarms, 600, args.close)
        for variant in ("plain", "polar", "skip", "polar+skip") if "features" in parts else ():
            fresh = feature_student(cfg, variant)
            fit(fresh, train, steps=args.fit_steps, batch=128, optimizer="adam", lr=1e-3)
            emit({"probe": "features", "variant": variant, "train_swarms": swarms, "close_drones": int(near.sum()),
                  "parameters": sum(p.numel() for p in fresh.parameters()),
                  "fresh_train": close_error(fresh, train, near),
                  "fresh_held_out": close_error(fresh, test, test_near)})
        if not {"fit", "expert"} & set(parts):
            continue
        student = make_student("attention", cfg, seed=0)
        fit(student, train, steps=args.fit_steps, batch=128, optimizer="adam", lr=1e-3)
        emit({"probe": "close_fit", "train_swarms": swarms, "close_drones": int(near.sum()),
              "policy_error": close_error(policy, test, test_near),
              "fresh_train": close_error(student, train, near),
              "fresh_held_out": close_error(student, test, test_near)})
    if "expert" in parts:
        arm = cfg.dynamics.arm

        def with_expert(obs: torch.Tensor) -> torch.Tensor:
            near = (nearest_gap(obs, arm) < args.close).unsqueeze(-1)
            return torch.where(near, student_actions(student, obs), student_actions(policy, obs))

        for density in (float(d) for d in args.eval_densities.split(",")):
            for name, flown in (("policy", as_controller(policy)), ("policy+expert", as_controller(with_expert)),
                                ("policy+shield", Shield(as_controller(policy), make_controller(
                                    "pid_avoid", cfg.dynamics), gap=args.close))):
                report, _ = evaluate_swarm(as_controller(flown), env_config(density), episodes=args.envs,
                                           seed=args.eval_seed)
                keys = ("success_rate", "neighbour_collision_rate", "obstacle_collision_rate", "deadlock_rate",
                        "distance_to_goal_1s")
                emit({"probe": "expert", "flown": name, "density": density, "seed": args.eval_seed,
                      **{k: round(report[k], 4) for k in keys}})
    for density in (float(d) for d in args.eval_densities.split(",")) if "contacts" in parts else ():
        actor = getattr(policy, "actor", None)
        for name, flown, gated in ((args.policy, policy, actor if hasattr(actor, "gates") else None),
                                   ("pid_avoid", make_controller("pid_avoid", cfg.dynamics), None)):
            rows = contact_rows(flown, env_config(density), args.envs, 500, gated)
            emit({"probe": "contacts", "flown": name, "density": density, "seed": 500, "swarms": args.envs,
                  "contacts": rows})
    for density in (float(d) for d in args.eval_densities.split(",")) if "anatomy" in parts else ():
        actor = getattr(policy, "actor", None)
        gated = actor if hasattr(actor, "gates") else None  # its gates also count pid_avoid's steps near hazards
        flights = [(args.policy, policy), ("pid_avoid", make_controller("pid_avoid", cfg.dynamics))]
        if args.column_blend:
            if getattr(actor, "column", None) is None:
                raise SystemExit(f"--column-blend needs a policy with a column network (agent.column_range): "
                                 f"{args.policy} has none")
            lo, hi = (float(v) for v in args.column_blend.split(","))
            flights.append((f"{args.policy} column blend {lo:g}-{hi:g} m", blended(policy, lo, hi)))
        for name, flown in flights:
            cell = eval_config(args.policy, drones=8, density=density, obstacle_size=0.6)
            emit({"probe": "anatomy", "flown": name, "density": density, "seed": args.anatomy_seed,
                  "swarms": args.envs, "rows": anatomy_rows(flown, cell, args.envs, args.anatomy_seed, gated)})
    if "capacity" in parts:
        for row in capacity_rows(policy, int(args.train_swarms.split(",")[-1]), args.fit_steps):
            emit(row)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
