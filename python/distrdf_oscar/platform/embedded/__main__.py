"""Entry point of the platform process (``python -m distrdf_oscar.platform.embedded``); see :mod:`.process`."""

import sys

from .process import main

sys.exit(main())
