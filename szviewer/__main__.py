from szviewer.cli import main

raise SystemExit(main())
