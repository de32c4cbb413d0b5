"""``python -m marl`` runs the ``marl`` command line."""

import sys

from marl.cli import main

sys.exit(main())
