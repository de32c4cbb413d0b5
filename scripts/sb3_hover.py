"""Train Stable-Baselines3's PPO on a single-drone task through the batched core's SB3 VecEnv.

    .venv/bin/python scripts/sb3_hover.py --env QuadHover-v0 --steps 100000 --out runs/sb3_hover
    .venv/bin/python scripts/sb3_hover.py --compare --n-envs 64 --steps 16384   # PPO steps/s, two VecEnvs

Training: ``envs.sb3_vec_env.QuadSB3VecEnv`` steps all ``--n-envs`` environments in one tensor step,
plain ``MlpPolicy`` (``--extractor attention`` uses agents.sb3.SwarmFeaturesExtractor instead). At the
end the deterministic policy and a uniform random policy fly one episode of the same seeded 64
environments, and the mean returns and episode metrics are printed as JSON.

``--compare``: the same PPO settings and step budget through SB3's own ``DummyVecEnv`` over the
Gymnasium view (one ``gym.Env.step`` per environment) and through the batched VecEnv, in this
process one after the other; prints the steps/s of each (whole ``learn`` and rollout collection
alone) and their ratio. Measured with the defaults above on the shared 2-core machine (under a load of
~8): 32 envs, 8192 steps, PPO 2,013 against 86 steps/s (23x), rollout collection 2,742 against 88
steps/s (31x); a second run under heavier load gave 14x / 19x.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

import envs  # noqa: F401  (registers the Gymnasium ids)
from agents.sb3 import BATCHED_PPO_KWARGS, SwarmFeaturesExtractor
from envs.sb3_vec_env import episode_returns, make_sb3_vec_env

PPO_KWARGS = BATCHED_PPO_KWARGS


class _RolloutClock(BaseCallback):
    """Sums the wall time spent collecting rollouts (SB3 calls the hooks around each collection)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


def make_model(vec: VecEnv, seed: int, extractor: str | None = None, verbose: int = 0, **overrides: Any) -> PPO:
    """SB3 PPO with ``PPO_KWARGS`` (and ``overrides``) on ``vec``; ``extractor`` names our encoder, or None."""
    policy_kwargs: dict[str, Any] = {}
    if extractor is not None:
        policy_kwargs = {
            "features_extractor_class": SwarmFeaturesExtractor,
            "features_extractor_kwargs": {"encoder": extractor, "preset": "deployable"},
            "net_arch": [],
        }
    kwargs = {**PPO_KWARGS, **overrides}
    return PPO("MlpPolicy", vec, seed=seed, device="cpu", verbose=verbose, policy_kwargs=policy_kwargs, **kwargs)


def timed_learn(vec: VecEnv, steps: int, seed: int, **overrides: Any) -> dict[str, float]:
    """Train PPO for ``steps`` on ``vec``; steps/s of the whole ``learn`` and of rollout collection."""
    model = make_model(vec, seed, **overrides)
    clock = _RolloutClock()
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=clock)
    wall = time.perf_counter() - start
    done = model.num_timesteps
    return {"steps": done, "wall_s": wall, "steps_per_s": done / wall, "rollout_steps_per_s": done / clock.seconds}


def compare(env_id: str, n_envs: int, steps: int, episode_seconds: float, seed: int) -> dict[str, Any]:
    """SB3 PPO steps/s through DummyVecEnv (Gymnasium view) and through the batched VecEnv, same settings."""
    env_kwargs = {"episode_seconds": episode_seconds}
    # n_steps so that both collect the same rollout size whatever n_envs (batch_size must divide it).
    n_steps = max(1, 4096 // n_envs)
    overrides = {"n_steps": n_steps, "batch_size": min(1024, n_steps * n_envs)}
    dummy = DummyVecEnv([lambda: Monitor(gym.make(env_id, **env_kwargs)) for _ in range(n_envs)])
    dummy.seed(seed)
    ref = timed_learn(dummy, steps, seed, **overrides)
    batched = VecMonitor(make_sb3_vec_env(env_id, num_envs=n_envs, seed=seed, **env_kwargs))
    new = timed_learn(batched, steps, seed, **overrides)
    return {
        "env": env_id, "n_envs": n_envs, "steps": steps, "ppo": {**PPO_KWARGS, **overrides},
        "dummy_vec_env": ref, "batched_vec_env": new,
        "ratio_steps_per_s": new["steps_per_s"] / ref["steps_per_s"],
        "ratio_rollout_steps_per_s": new["rollout_steps_per_s"] / ref["rollout_steps_per_s"],
    }


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Train, save, then compare the trained policy's return with a random policy's on the same seeds."""
    env_kwargs = {"episode_seconds": args.episode_seconds}
    vec = VecMonitor(make_sb3_vec_env(args.env, num_envs=args.n_envs, seed=args.seed, **env_kwargs))
    model = make_model(vec, args.seed, extractor=args.extractor, verbose=1)
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    wall = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.zip")

    test = make_sb3_vec_env(args.env, num_envs=64, **env_kwargs)
    rng = np.random.default_rng(args.seed)
    rand = episode_returns(test, lambda o: rng.uniform(-1, 1, (len(o), 4)).astype(np.float32), args.seed + 1000)
    trained = episode_returns(test, lambda o: model.predict(o, deterministic=True)[0], args.seed + 1000)
    return {
        "env": args.env, "steps": model.num_timesteps, "train_wall_s": wall,
        "return_mean": float(trained.mean()), "random_return_mean": float(rand.mean()), "model": str(out / "model.zip"),
    }


def main() -> None:
    """Train and evaluate one SB3 PPO model, or (``--compare``) time two VecEnvs side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="QuadHover-v0", help="QuadHover-v0, QuadGoal-v0 or QuadGoalObstacles-v0")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--n-envs", type=int, default=128)
    parser.add_argument("--episode-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extractor", choices=["mlp", "attention", "deepsets"], default=None,
                        help="our encoder as SB3 features extractor (default: SB3's plain MlpPolicy)")
    parser.add_argument("--out", default="runs/sb3")
    parser.add_argument("--compare", action="store_true", help="time PPO through DummyVecEnv and the batched VecEnv")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: SB3's small networks gain nothing from more, and contend)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        result = compare(args.env, args.n_envs, args.steps, args.episode_seconds, args.seed)
    else:
        result = train_and_evaluate(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
