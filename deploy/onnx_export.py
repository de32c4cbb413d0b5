"""ONNX export of the float actor (obs [N, D] -> action means [N, 4]), checked with onnxruntime.

Uses torch's TorchScript-based exporter (``dynamo=False``: the dynamo path needs onnxscript, which we do
not ship). The check runs the file in onnxruntime on recorded states and returns the max abs
difference to torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17


def export_onnx(actor: nn.Module, states: torch.Tensor, path: str | Path) -> float:
    """Write ``actor`` to ``path`` as ONNX and return max |onnxruntime - torch| over ``states`` [N, D]."""
    # Imported here, so that the rest of deploy/ works without onnx and onnxruntime installed.
    import onnx
    import onnxruntime as ort

    path = Path(path)
    actor = actor.eval()
    example = states[:1].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces its deprecation
        torch.onnx.export(
            actor, (example,), str(path), input_names=["obs"], output_names=["action_mean"],
            dynamic_axes={"obs": {0: "batch"}, "action_mean": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"obs": states.float().numpy()})[0]
    with torch.no_grad():
        want = actor(states.float()).numpy()
    return float(np.abs(got - want).max())
