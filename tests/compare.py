"""Assertions that two ROOT results are the same, bin by bin and point by point."""

from __future__ import annotations

import math

import numpy as np

REL = 1e-12  # floating-point rounding of a different summation order


def close(a: float, b: float, rel: float = REL) -> bool:
    return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


def assert_close(a: float, b: float, what: str, rel: float = REL) -> None:
    assert close(float(a), float(b), rel), f"{what}: {a!r} != {b!r}"


def assert_same_hist(h, ref, what: str = "") -> None:
    what = what or ref.GetName()
    assert h.ClassName() == ref.ClassName(), f"{what}: class {h.ClassName()} != {ref.ClassName()}"
    assert h.GetNcells() == ref.GetNcells(), f"{what}: cell count"
    contents = np.array([h.GetBinContent(i) for i in range(h.GetNcells())])
    expected = np.array([ref.GetBinContent(i) for i in range(ref.GetNcells())])
    np.testing.assert_allclose(contents, expected, rtol=REL, atol=0, err_msg=f"{what}: bin contents")
    errors = np.array([h.GetBinError(i) for i in range(h.GetNcells())])
    expected_errors = np.array([ref.GetBinError(i) for i in range(ref.GetNcells())])
    np.testing.assert_allclose(errors, expected_errors, rtol=1e-10, atol=0, err_msg=f"{what}: bin errors")
    assert_close(h.GetEntries(), ref.GetEntries(), f"{what}: entries")
    stats, ref_stats = np.zeros(13), np.zeros(13)
    h.GetStats(stats)
    ref.GetStats(ref_stats)
    np.testing.assert_allclose(stats, ref_stats, rtol=1e-10, atol=1e-9, err_msg=f"{what}: sums of weights")


def graph_points(g) -> list[tuple]:
    n = g.GetN()
    cols = [g.GetX(), g.GetY()]
    if g.InheritsFrom("TGraphAsymmErrors"):
        cols += [g.GetEXlow(), g.GetEXhigh(), g.GetEYlow(), g.GetEYhigh()]
    return sorted(tuple(float(c[i]) for c in cols) for i in range(n))


def assert_same_graph(g, ref, what: str = "graph") -> None:
    assert g.ClassName() == ref.ClassName(), what
    assert graph_points(g) == graph_points(ref), f"{what}: points differ"


def sparse_bins(h) -> dict[tuple, tuple[float, float]]:
    out = {}
    coords = np.zeros(h.GetNdimensions(), dtype=np.int32)
    for i in range(h.GetNbins()):
        # The (Long64_t, Int_t*) overload: (const Int_t*) alone would take i as a pointer.
        content = h.GetBinContent(i, coords)
        out[tuple(int(c) for c in coords)] = (content, h.GetBinError2(i))
    return out


def assert_same_thn(h, ref, what: str = "THn") -> None:
    """Dense THn and THnSparse alike: every stored bin by its coordinates (a sparse one stores the filled ones)."""
    assert h.ClassName() == ref.ClassName(), what
    a, b = sparse_bins(h), sparse_bins(ref)
    assert a.keys() == b.keys(), f"{what}: stored bins differ"
    for key in a:
        assert_close(a[key][0], b[key][0], f"{what}: bin {key}")
        assert_close(a[key][1], b[key][1], f"{what}: error2 {key}")
    assert_close(h.GetEntries(), ref.GetEntries(), f"{what}: entries")


def assert_same_statistic(s, ref, what: str = "TStatistic") -> None:
    assert s.GetN() == ref.GetN(), f"{what}: N"
    for name in ("GetW", "GetW2", "GetMean", "GetRMS", "GetMin", "GetMax"):
        assert_close(getattr(s, name)(), getattr(ref, name)(), f"{what}: {name}", rel=1e-10)


def assert_same_value(value, ref, what: str) -> None:
    """Dispatch on the kind of result (ROOT object, numpy dict, scalar)."""
    if isinstance(ref, dict):
        assert value.keys() == ref.keys(), what
        for key in ref:
            # Entry order too: partials carry their range, whatever order the merges took.
            assert np.asarray(value[key]).dtype == np.asarray(ref[key]).dtype, f"{what}[{key}] dtype"
            np.testing.assert_array_equal(
                np.asarray(value[key]), np.asarray(ref[key]), err_msg=f"{what}[{key}]"
            )
        return
    if isinstance(ref, (int, float)):
        assert_close(value, ref, what)
        return
    name = ref.ClassName() if hasattr(ref, "ClassName") else type(ref).__name__
    if name.startswith("TGraph"):
        assert_same_graph(value, ref, what)
    elif name.startswith("THn"):
        assert_same_thn(value, ref, what)
    elif name == "TStatistic":
        assert_same_statistic(value, ref, what)
    elif name.startswith(("TH1", "TH2", "TH3", "TProfile")):
        assert_same_hist(value, ref, what)
    else:
        raise AssertionError(f"{what}: no comparison for {name}")
