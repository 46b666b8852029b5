import sys

from server.agent.run import main

sys.exit(main())
