"""``python -m demo``: the same as ``negguide demo``."""

import sys

from negguide.cli import main

raise SystemExit(main(["demo", *sys.argv[1:]]))
