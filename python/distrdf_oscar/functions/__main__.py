"""``python -m distrdf_oscar.functions NAME``: what a service's script runs."""

import importlib
import sys

from ..protocol.contract import ENTRYPOINTS

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ENTRYPOINTS:
        sys.exit(f"usage: python -m distrdf_oscar.functions {{{','.join(ENTRYPOINTS)}}}")
    module, function = ENTRYPOINTS[sys.argv[1]].split(":")
    sys.exit(getattr(importlib.import_module(module), function)())
