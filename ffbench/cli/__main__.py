from ffbench.cli import main

raise SystemExit(main())
