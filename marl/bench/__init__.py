"""Benchmarks: the measured figures of the platform, each a function that returns a JSON-ready dict.

- ``marl.bench.sim``: simulator throughput (``marl bench sim``), batched core vs PettingZoo vs PyBullet.
- ``marl.bench.train``: end-to-end training throughput, one process or Ray workers (``marl bench train``).
- ``marl.bench.optim``: the optimiser suites (``marl bench optim``): sso, tpsgd and ppo.
- ``marl.bench.studies``: the experiments behind the sso and tpsgd suites (logistic regression,
  behaviour cloning, digits, tpSGD distillation); they use the library, the library never uses them.

What each suite measures and how: docs/design/benchmarks.md.
"""

from marl.bench.sim import bench_env_config, bench_sim, bench_sweep, sweep_ratios

__all__ = ["bench_env_config", "bench_sim", "bench_sweep", "sweep_ratios"]
