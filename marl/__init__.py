"""The training loop, evaluation, benchmarks and the ``marl`` command line.

Importing marl makes OpenMP threads wait passively (unless OMP_WAIT_POLICY is already set): on a
shared machine the cores are oversubscribed, and spinning OpenMP threads then slow the small ops of
rollouts and updates down by 5-20x (measured on the 2-core dev machine); passive waiting costs
little when the cores are free. It must happen before torch loads its OpenMP runtime, which is why
it lives here rather than next to the trainer.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
