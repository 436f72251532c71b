"""``python -m jdeconv``: the command line tool (see :mod:`jdeconv.experiment.cli`)."""

import sys

from jdeconv.experiment.cli import main

sys.exit(main())
