import sys

from demo._run import main

sys.exit(main())
