"""distrdf-oscar: ROOT's distributed RDataFrame as serverless functions on OSCAR.

    import ROOT
    import distrdf_oscar as dro

    with dro.LocalCluster(workers=2) as cluster:
        df = ROOT.RDataFrame("Events", files, executor=cluster.executor(), npartitions=8)

Importing this package installs the ``executor=`` dispatch (see ``client/dispatch.py``)
once ROOT is imported, without importing ROOT itself. The client's names below load on first use:
every function OSCAR runs imports this package first (``distrdf_oscar.functions``),
and a reducer's start-up should not pay for the executor, the embedded platform
and their dependencies (about 0.1 s).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .client import dispatch

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "DEFAULT_REDUCTION": "client.reductions",
    "AutoReduction": "client.reductions",
    "ConfigurationError": "client.settings",
    "CoordinatedReduction": "protocol.plan",
    "DatasetError": "protocol.datasets",
    "Deployment": "platform.deployment",
    "JobRemoved": "client.recovery",
    "JobTimeout": "client.recovery",
    "LocalCluster": "local",
    "OSCARError": "platform.oscar.errors",
    "OSCARExecutor": "client.executor",
    "PlanError": "protocol.plan",
    "RemoteError": "client.recovery",
    "TreeReduction": "protocol.plan",
}

if TYPE_CHECKING:
    from .client.executor import OSCARExecutor
    from .client.recovery import JobRemoved, JobTimeout, RemoteError
    from .client.reductions import DEFAULT_REDUCTION, AutoReduction
    from .client.settings import ConfigurationError
    from .local import LocalCluster
    from .platform.deployment import Deployment
    from .platform.oscar.errors import OSCARError
    from .protocol.datasets import DatasetError
    from .protocol.plan import CoordinatedReduction, PlanError, TreeReduction


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


dispatch.install_with_root()

__all__ = [  # the names of _EXPORTS
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
