"""``python -m schedgym`` is the ``schedgym`` command."""

import sys

from schedgym.cli import main

sys.exit(main())
