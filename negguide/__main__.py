"""``python -m negguide ...``: the same as the ``negguide`` command."""

from negguide.cli import main

raise SystemExit(main())
