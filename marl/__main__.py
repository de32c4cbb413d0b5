"""``python -m marl`` runs the ``marl`` command line (marl.cli)."""

import sys

from marl.cli import main

sys.exit(main())
