"""Shared test settings: the simulator tests use tiny batches, for which one thread is fastest."""

import torch

torch.set_num_threads(1)
