from cctv.cli import main

raise SystemExit(main())
