"""``executor=`` dispatch: route an OSCARExecutor to our backend, leave Dask and Spark to ROOT.

``ROOT.RDataFrame(..., executor=X)`` and ``FromSpec`` dispatch in ``ROOT._distrdf``
on the type of ``X``. Importing ``distrdf_oscar`` wraps those two entry points, and
``RunGraphs`` so that a failing graph of ours raises there; it touches nothing that
starts ROOT's interpreter, so it costs nothing at import.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from .executor import OSCARExecutor


def _constructor_error(exc: TypeError) -> Exception:
    """DistRDF turns a failing RDataFrame construction (e.g. a wrong tree name) into "arguments
    not accepted by any constructor"; the C++ reason is in the chained overload errors. Name it."""
    from ..protocol.root_errors import cpp_reasons

    reasons = cpp_reasons(f"{exc}\n{exc.__context__ or ''}")
    if not reasons:
        return exc
    return ValueError("cannot build the RDataFrame: " + "; ".join(reasons))


def _is_ours(executor: object) -> TypeGuard[OSCARExecutor]:
    from .executor import OSCARExecutor

    return isinstance(executor, OSCARExecutor)


def _our_heads(proxies: Iterable[Any]) -> list[Any] | None:
    """The distinct head nodes of these DistRDF proxies, when every one runs on our backend."""
    from .backend import OSCARBackend

    heads: dict[int, Any] = {}
    for proxy in proxies:
        node = getattr(proxy, "proxied_node", None)
        if node is None:
            return None
        head = node.get_head()
        if not isinstance(head.backend, OSCARBackend):
            return None
        heads.setdefault(id(head), node)
    return list(heads.values())


def run_graphs(proxies: Iterable[Any], stock: Callable[[Iterable[Any]], int]) -> int:
    """ROOT's distributed ``RunGraphs`` runs the graphs in threads and never reads their
    outcome, so a failed graph only fails later, at ``GetValue``, which submits it again. For
    graphs on our backend: run each once, wait for all (each cleans up its own job), then raise
    the first failure."""
    nodes = _our_heads(proxies) if proxies else None
    if nodes is None:
        return stock(proxies)
    from concurrent.futures import ThreadPoolExecutor

    from ROOT._distrdf.Proxy import execute_graph

    with ThreadPoolExecutor(max_workers=len(nodes), thread_name_prefix="distrdf-oscar-graph") as pool:
        futures = [pool.submit(execute_graph, node) for node in nodes]
    failures = [exc for exc in (future.exception() for future in futures) if exc is not None]
    if failures:
        if len(failures) > 1:
            failures[0].add_note(
                f"distrdf-oscar: {len(failures)} of the {len(nodes)} graphs failed; this is the first"
            )
        raise failures[0]
    return len(nodes)


def install() -> None:
    import ROOT
    import ROOT._distrdf as distrdf

    if getattr(distrdf.RDataFrame, "_distrdf_oscar", False):
        return
    stock_rdataframe = distrdf.RDataFrame
    stock_fromspec = distrdf.FromSpec
    stock_rungraphs = distrdf.RunGraphs

    def RDataFrame(*args: Any, **kwargs: Any) -> Any:
        executor = kwargs.get("executor")
        if _is_ours(executor):
            from .backend import OSCARBackend

            kwargs.pop("executor")
            try:
                return OSCARBackend(executor).make_dataframe(*args, **kwargs)
            except TypeError as exc:
                raise _constructor_error(exc) from exc
        return stock_rdataframe(*args, **kwargs)

    def FromSpec(jsonfile: str, *args: Any, **kwargs: Any) -> Any:
        executor = kwargs.get("executor")
        if _is_ours(executor):
            from .backend import OSCARBackend

            kwargs.pop("executor")
            spec = ROOT.Internal.RDF.RetrieveSpecFromJson(jsonfile)
            return OSCARBackend(executor).make_dataframe(spec, *args, **kwargs)
        return stock_fromspec(jsonfile, *args, **kwargs)

    def RunGraphs(proxies: Iterable[Any]) -> int:
        return run_graphs(proxies, stock_rungraphs)

    RDataFrame._distrdf_oscar = True  # type: ignore[attr-defined]  # marks the installed dispatch
    RDataFrame.__doc__ = stock_rdataframe.__doc__
    FromSpec.__doc__ = stock_fromspec.__doc__
    RunGraphs.__doc__ = stock_rungraphs.__doc__
    distrdf.RDataFrame = RDataFrame
    distrdf.FromSpec = FromSpec
    distrdf.RunGraphs = RunGraphs
    # ROOT.RDF binds FromSpec and RunGraphs into ROOT.RDF.Distributed (and .Experimental, and
    # ROOT.RDF.RunGraphs's local-or-distributed switch) when it is first built, after which the
    # facade drops its RDF property; if that already happened, rebind there.
    if "RDF" not in type(ROOT).__dict__:
        ROOT.RDF.Distributed.FromSpec = FromSpec
        ROOT.RDF.Distributed.RunGraphs = RunGraphs
        stock_switch = ROOT.RDF.RunGraphs

        def SwitchRunGraphs(handles: Sequence[Any]) -> Any:
            # As ROOT's switch: the type's module name, since touching a proxy runs its graph.
            if len(handles) > 0 and "_distrdf" in str(type(handles[0])):
                return RunGraphs(handles)
            return stock_switch(handles)

        ROOT.RDF.RunGraphs = SwitchRunGraphs
        stock_experimental = ROOT.RDF.Experimental.FromSpec

        def ExperimentalFromSpec(jsonfile: str, *args: Any, **kwargs: Any) -> Any:
            if _is_ours(kwargs.get("executor")):
                return FromSpec(jsonfile, *args, **kwargs)
            return stock_experimental(jsonfile, *args, **kwargs)

        ROOT.RDF.Experimental.FromSpec = ExperimentalFromSpec


class _InstallAfterROOT:
    """A finder that, asked for ``ROOT``, lets the other finders find it and installs the dispatch
    right after ROOT's module has run; it removes itself at once."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> Any:
        if fullname != "ROOT":  # first: every import of the process asks
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("ROOT")
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            install()

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's loader only
        return spec


def install_with_root() -> None:
    """Install the dispatch now if ROOT is imported, else as soon as it is: importing
    distrdf-oscar never imports ROOT itself (whose import costs a second and announces itself)."""
    if "ROOT" in sys.modules:
        install()
    elif not any(isinstance(finder, _InstallAfterROOT) for finder in sys.meta_path):
        sys.meta_path.insert(0, _InstallAfterROOT())
