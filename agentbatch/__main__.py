from agentbatch.cli.main import main

raise SystemExit(main())
