"""``executor=`` dispatch: route an OSCARExecutor to our backend, leave Dask and Spark to ROOT.

``ROOT.RDataFrame(..., executor=X)`` and ``FromSpec`` dispatch in ``ROOT._distrdf``
on the type of ``X``. Importing ``distrdf_oscar`` wraps those two entry points;
it touches nothing that starts ROOT's interpreter, so it costs nothing at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from .executor import OSCARExecutor


def _constructor_error(exc: TypeError) -> Exception:
    """DistRDF turns a failing RDataFrame construction (e.g. a wrong tree name) into "arguments
    not accepted by any constructor"; the C++ reason is in the chained overload errors. Name it."""
    from .root_errors import cpp_reasons

    reasons = cpp_reasons(f"{exc}\n{exc.__context__ or ''}")
    if not reasons:
        return exc
    return ValueError("cannot build the RDataFrame: " + "; ".join(reasons))


def _is_ours(executor: object) -> TypeGuard[OSCARExecutor]:
    from .executor import OSCARExecutor

    return isinstance(executor, OSCARExecutor)


def install() -> None:
    import ROOT
    import ROOT._distrdf as distrdf

    if getattr(distrdf.RDataFrame, "_distrdf_oscar", False):
        return
    stock_rdataframe = distrdf.RDataFrame
    stock_fromspec = distrdf.FromSpec

    def RDataFrame(*args, **kwargs):
        executor = kwargs.get("executor")
        if _is_ours(executor):
            from .backend import OSCARBackend

            kwargs.pop("executor")
            try:
                return OSCARBackend(executor).make_dataframe(*args, **kwargs)
            except TypeError as exc:
                raise _constructor_error(exc) from exc
        return stock_rdataframe(*args, **kwargs)

    def FromSpec(jsonfile: str, *args, **kwargs):
        executor = kwargs.get("executor")
        if _is_ours(executor):
            from .backend import OSCARBackend

            kwargs.pop("executor")
            spec = ROOT.Internal.RDF.RetrieveSpecFromJson(jsonfile)
            return OSCARBackend(executor).make_dataframe(spec, *args, **kwargs)
        return stock_fromspec(jsonfile, *args, **kwargs)

    RDataFrame._distrdf_oscar = True  # type: ignore[attr-defined]  # marks the installed dispatch
    RDataFrame.__doc__ = stock_rdataframe.__doc__
    FromSpec.__doc__ = stock_fromspec.__doc__
    distrdf.RDataFrame = RDataFrame
    distrdf.FromSpec = FromSpec
    # ROOT.RDF binds FromSpec into ROOT.RDF.Distributed and .Experimental when it is first
    # built (the facade then drops its RDF property); if that already happened, rebind there.
    if "RDF" not in type(ROOT).__dict__:
        ROOT.RDF.Distributed.FromSpec = FromSpec
        stock_experimental = ROOT.RDF.Experimental.FromSpec

        def ExperimentalFromSpec(jsonfile: str, *args, **kwargs):
            if _is_ours(kwargs.get("executor")):
                return FromSpec(jsonfile, *args, **kwargs)
            return stock_experimental(jsonfile, *args, **kwargs)

        ROOT.RDF.Experimental.FromSpec = ExperimentalFromSpec
