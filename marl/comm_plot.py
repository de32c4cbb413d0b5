"""Pictures of what a communicating policy (CommFormer) learned: whom each agent hears, and when.

    marl plot RUN          # also writes RUN/plots/adjacency.png and gate_rate.png for CommFormer runs

- ``adjacency.png``: the acting graph (row i: the agents whose messages agent i receives; exact
  top-k of the learned edge logits, self-loops included) next to the row-wise softmax of the edge
  logits over the other agents (how sure the graph is).
- ``gate_rate.png``: one deterministic episode of the run's environment: for each agent and step
  whether its gate is open (it receives messages), the fraction of open gates and of all possible
  messages actually received; plus, from metrics.jsonl, the communication rate over training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from marl.checkpoint import load_policy
from marl.logger import read_metrics
from marl.vec_env import make_vec_env


def episode_gate_trace(policy: Any, env_cfg: Any, seed: int = 0, max_steps: int = 10_000) -> dict[str, Any]:
    """Run one deterministic episode; returns ``gate_open`` [T, M] (bool tensor) and per-step
    ``communication_rate`` (list of T floats)."""
    env = make_vec_env(env_cfg, 1)
    obs = env.reset(seed=seed)
    gates, rates = [], []
    with torch.no_grad():
        for _ in range(max_steps):
            gates.append(policy.gate_open(obs)[0])
            rates.append(policy.communication_stats(obs)["communication_rate"])
            obs, _, _, _, info = env.step(policy.act(obs, deterministic=True)[0])
            if "episode_env_ids" in info:
                break
    return {"gate_open": torch.stack(gates), "communication_rate": rates}


def plot_communication(run_dir: str | Path, out_dir: str | Path | None = None, seed: int = 0) -> list[Path]:
    """Write adjacency.png and gate_rate.png for a run whose policy communicates; [] for other runs."""
    import matplotlib

    matplotlib.use("Agg")  # files only: the backend must be chosen before pyplot loads
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    policy, env_cfg = load_policy(run_dir)
    if not policy.edge_parameters():  # no learned communication graph to plot
        return []
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = []

    adjacency = policy.adjacency().float().cpu()
    logits = policy.edge_parameters()[0].detach().float().cpu().clone()
    logits.fill_diagonal_(float("-inf"))
    soft = torch.softmax(logits, -1) if logits.shape[0] > 1 else torch.zeros_like(logits)
    n = adjacency.shape[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, mat, title in ((axes[0], adjacency, "acting graph (top-k + self)"),
                           (axes[1], soft, "softmax of edge logits (others)")):
        im = ax.imshow(mat.numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set_xlabel("sender j")
        ax.set_ylabel("receiver i")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{run_dir.name}: learned communication graph ({n} agents)")
    fig.tight_layout()
    paths.append(out / "adjacency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    trace = episode_gate_trace(policy, env_cfg, seed)
    gates = trace["gate_open"].float().cpu()  # [T, M]
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("communication_rate") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    axes[0].imshow(gates.T.numpy(), aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("agent")
    axes[0].set_title("gate open (black) over one episode", fontsize=10)
    steps = range(gates.shape[0])
    axes[1].plot(steps, gates.mean(1).numpy(), label="gates open")
    axes[1].plot(steps, trace["communication_rate"], label="messages received / possible")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    axes[1].set_title("communication over one episode", fontsize=10)
    if records:
        axes[2].plot([r["agent_steps"] for r in records], [r["communication_rate"] for r in records])
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].set_xlabel("agent steps")
    axes[2].set_title("communication rate during training", fontsize=10)
    for ax in axes[1:]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "gate_rate.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
