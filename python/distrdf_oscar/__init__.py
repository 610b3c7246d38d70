"""distrdf-oscar: ROOT's distributed RDataFrame as serverless functions on OSCAR.

    import ROOT
    import distrdf_oscar as dro

    with dro.LocalCluster(workers=2) as cluster:
        df = ROOT.RDataFrame("Events", files, executor=cluster.executor(), npartitions=8)

Importing this package installs the ``executor=`` dispatch (see ``dispatch.py``)
without starting ROOT's interpreter, so functions that need no ROOT start fast.
"""

__version__ = "0.1.0"

from . import dispatch
from .datasets import DatasetError
from .deployment import Deployment
from .executor import ConfigurationError, OSCARExecutor
from .local import LocalCluster
from .plan import DEFAULT_REDUCTION, AutoReduction, CoordinatedReduction, PlanError, TreeReduction
from .platform.oscar import OSCARError
from .recovery import JobRemoved, JobTimeout, RemoteError

dispatch.install()

__all__ = [
    "DEFAULT_REDUCTION",
    "AutoReduction",
    "ConfigurationError",
    "CoordinatedReduction",
    "DatasetError",
    "Deployment",
    "JobRemoved",
    "JobTimeout",
    "LocalCluster",
    "OSCARError",
    "OSCARExecutor",
    "PlanError",
    "RemoteError",
    "TreeReduction",
]
