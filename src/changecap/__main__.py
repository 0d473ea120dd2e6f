from changecap.cli.main import main

raise SystemExit(main())
