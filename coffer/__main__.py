"""`python -m coffer` is the `coffer` console script."""

import sys

from coffer.cli import main

sys.exit(main())
