"""distrdf-oscar: ROOT's distributed RDataFrame as serverless functions on OSCAR.

    import ROOT
    import distrdf_oscar as dro

    with dro.LocalCluster(workers=2) as cluster:
        df = ROOT.RDataFrame("Events", files, executor=cluster.executor(), npartitions=8)

Importing this package installs the ``executor=`` dispatch (see ``dispatch.py``)
without starting ROOT's interpreter, so functions that need no ROOT start fast.
"""

__version__ = "0.1.0"

from .executor import ConfigurationError, OSCARExecutor  # noqa: E402
from .recovery import JobTimeout, RemoteError  # noqa: E402
from .local import LocalCluster  # noqa: E402
from .plan import DEFAULT_REDUCTION, CoordinatedReduction, PlanError, TreeReduction  # noqa: E402
from .platform.oscar import OSCARError  # noqa: E402
from .services.definitions import Deployment  # noqa: E402
from . import dispatch  # noqa: E402

dispatch.install()

__all__ = [
    "LocalCluster", "OSCARExecutor", "TreeReduction", "CoordinatedReduction", "DEFAULT_REDUCTION",
    "Deployment", "RemoteError", "JobTimeout", "PlanError", "ConfigurationError", "OSCARError",
]
