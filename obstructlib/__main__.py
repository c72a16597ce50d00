"""``python -m obstructlib`` is the ``obstruct`` command."""

import sys

from obstructlib.cli import main

sys.exit(main())
