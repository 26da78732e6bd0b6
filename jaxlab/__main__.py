"""`python -m jaxlab` runs the command line."""

import sys

from jaxlab.cli import main

sys.exit(main())
