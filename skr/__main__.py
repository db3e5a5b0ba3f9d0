"""``python -m skr``: see skr.cli."""

from skr.cli import main

raise SystemExit(main())
