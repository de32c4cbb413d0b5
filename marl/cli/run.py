"""``marl run``: the README's main job end to end (marl.pipeline.run_pipeline).

The command's parser lives next to the pipeline (``marl.pipeline.register``) while it is being
written; it moves here once the pipeline settles.
"""

from __future__ import annotations

from marl.pipeline import register

__all__ = ["register"]
