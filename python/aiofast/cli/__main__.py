"""``python -m aiofast.cli``."""

import sys

from aiofast.cli import main

sys.exit(main())
