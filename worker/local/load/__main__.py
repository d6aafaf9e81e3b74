import sys

from worker.local.load.run import main

sys.exit(main())
