from szviewer.launcher import main

raise SystemExit(main())
