"""``python -m marl.cli`` runs the ``marl`` command line."""

import sys

from marl.cli import main

sys.exit(main())
