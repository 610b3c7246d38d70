"""The embedded, OSCAR-compatible local platform: OSCAR's REST API, MinIO-style
storage triggers and a function runner on loopback, with moto as object store.

Importing this package is cheap: the platform itself runs in a child process.
"""

from .faults import Fault
from .launcher import LocalPlatform

__all__ = ["Fault", "LocalPlatform"]
