from earlywarn.cli import main

raise SystemExit(main())
