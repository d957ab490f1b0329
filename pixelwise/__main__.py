"""``python -m pixelwise`` (and ``torchrun -m pixelwise``) runs the command-line tool."""

import sys

from pixelwise.cli import main

sys.exit(main())
