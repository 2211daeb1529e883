from agentbatch.cli import main

raise SystemExit(main())
