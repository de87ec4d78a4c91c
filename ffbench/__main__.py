"""python -m ffbench: the command line."""

from ffbench.cli import main

raise SystemExit(main())
