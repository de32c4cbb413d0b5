"""``marl eval POLICY``: evaluate a built-in controller or a trained run (marl.evaluate).

The command's parser still lives next to its library in marl.evaluate (``register``) while that
module is being reworked; it moves here once the library settles.
"""

from __future__ import annotations

from marl.evaluate import register

__all__ = ["register"]
