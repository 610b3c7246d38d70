"""Entry point of the platform process (``python -m distrdf_oscar.platform.local``); see :mod:`.process`."""

import sys

from .process import main

sys.exit(main())
