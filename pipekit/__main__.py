"""``python -m pipekit`` runs the ``pipekit`` command."""

import sys

from .cli import main

sys.exit(main())
