"""Train Stable-Baselines3's PPO on a single-drone Gymnasium task with our attention encoder.

    .venv/bin/python scripts/sb3_hover.py --env QuadHover-v0 --steps 200000 --out runs/sb3_hover

The features extractor (agents.sb3.SwarmFeaturesExtractor) splits the flat observation into its self /
neighbour / obstacle segments and runs the same encoders as the swarm policies; everything else is
plain SB3. At the end the model is evaluated for a few episodes and the episode metrics are printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

import envs  # noqa: F401  (registers the Gymnasium ids)
from agents.sb3 import SwarmFeaturesExtractor


def main() -> None:
    """Train, save and evaluate one SB3 PPO model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="QuadHover-v0", help="QuadHover-v0, QuadGoal-v0 or QuadGoalObstacles-v0")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--episode-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sb3")
    args = parser.parse_args()

    env_kwargs = {"episode_seconds": args.episode_seconds}
    vec = DummyVecEnv([lambda: Monitor(gym.make(args.env, **env_kwargs)) for _ in range(args.n_envs)])
    vec.seed(args.seed)
    model = PPO(
        "MlpPolicy", vec, seed=args.seed, n_steps=256, batch_size=512, learning_rate=3e-4, verbose=1,
        policy_kwargs={
            "features_extractor_class": SwarmFeaturesExtractor,
            "features_extractor_kwargs": {"encoder": "attention", "preset": "deployable"},
            "log_std_init": -1.6,
        },
    )
    model.learn(total_timesteps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.zip")

    env = gym.make(args.env, **env_kwargs)
    results = []
    for episode in range(5):
        obs, _ = env.reset(seed=args.seed + 1000 + episode)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        results.append(info["metrics"])
    summary = {k: float(np.mean([r[k] for r in results])) for k in ("success_rate", "distance_to_goal_1s")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
