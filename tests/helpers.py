"""Helpers shared by test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def strict_api_warnings() -> Iterator[None]:
    """API-test warnings as errors, except the one our unbounded observation Box must trigger."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Deliberate: positions, velocities and rates have no hard bound.
        warnings.filterwarnings("ignore", message=".*observation space value is .*infinity")
        yield


def c_vs_torch(actor, q, states, out_dir: Path) -> float:
    """Max |C - torch| of the compressed actor ``q`` (deploy.quantize) on ``states``: its generated C built
    and run on the host in ``out_dir`` against the dequantised torch actor (clamped actions)."""
    import numpy as np
    import torch

    from deploy import verify
    from deploy.export_c import generate_c

    assert shutil.which("gcc") is not None, "gcc is needed to build the host binary (make setup installs it)"
    with torch.no_grad():
        ref = q.dequantized(actor)(states).clamp(-1, 1)
    files, _ = generate_c(actor, q, states[:3], ref[:3], fallback_action=0.0)
    for name, text in files.items():
        (out_dir / name).write_text(text)
    host, status = verify.run_host(out_dir, states.numpy())
    assert status == 0, f"the host binary's self test failed ({status})"
    return float(np.abs(host - ref.numpy()).max())
