from ssmttm.cli import main

raise SystemExit(main())
