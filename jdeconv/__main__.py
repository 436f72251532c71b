"""``python -m jdeconv``: the command line tool (see :mod:`jdeconv.cli`)."""

import sys

from jdeconv.cli import main

sys.exit(main())
