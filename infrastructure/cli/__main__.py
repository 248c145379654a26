"""`python -m infrastructure.cli`: the same as `lowrouter`."""

import sys

from infrastructure.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
