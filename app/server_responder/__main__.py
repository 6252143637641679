from server_responder.cli import main

raise SystemExit(main())
