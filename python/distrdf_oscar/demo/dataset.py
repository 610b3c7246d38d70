"""A synthetic NanoAOD-like dimuon dataset (``Events`` tree), generated reproducibly.

Each event has ``nMuon`` muons with ``Muon_pt/eta/phi/mass/charge``. Events
with two opposite-charge muons come either from a resonance (J/psi, Upsilon,
Z, decayed isotropically and boosted) or from a falling continuum, so the
dimuon spectrum shows the familiar peaks. The random stream of an event
depends only on (seed, global entry number), so any split of the dataset into
files gives the same events.
"""

from __future__ import annotations

import os
from typing import Any

_GENERATOR = r"""
#ifndef DISTRDF_OSCAR_DIMUON_GENERATOR
#define DISTRDF_OSCAR_DIMUON_GENERATOR
#include <cmath>
#include <cstdint>
#include "ROOT/RVec.hxx"
#include "Math/Vector4D.h"
#include "Math/Boost.h"
namespace distrdf_oscar {
struct DimuonEvent {
   unsigned int n = 0;
   ROOT::RVecF pt, eta, phi, mass;
   ROOT::RVecI charge;
};
class SplitMix {
   std::uint64_t s;
public:
   explicit SplitMix(std::uint64_t seed) : s(seed) {}
   std::uint64_t next() {
      std::uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      return z ^ (z >> 31);
   }
   double uniform() { return (next() >> 11) * 0x1.0p-53; }
   double gauss() { return std::sqrt(-2 * std::log(1 - uniform())) * std::cos(2 * M_PI * uniform()); }
};
inline void AddMuon(DimuonEvent &ev, const ROOT::Math::PtEtaPhiMVector &p, int q) {
   ev.pt.push_back(p.Pt()); ev.eta.push_back(p.Eta()); ev.phi.push_back(p.Phi());
   ev.mass.push_back(0.105658f); ev.charge.push_back(q); ev.n++;
}
inline DimuonEvent GenerateDimuonEvent(std::uint64_t entry, std::uint64_t seed) {
   SplitMix rng(seed * 0x100000001b3ULL + entry * 0x9e3779b97f4a7c15ULL);
   DimuonEvent ev;
   const double u = rng.uniform();
   unsigned int nextra = u < 0.15 ? 0 : (u < 0.25 ? 1 : (u < 0.85 ? 2 : 3 + (rng.uniform() < 0.3)));
   if (nextra >= 2) {
      const double r = rng.uniform();
      double m;
      if (r < 0.12) m = 3.0969 + 0.03 * rng.gauss();
      else if (r < 0.15) m = 3.6861 + 0.035 * rng.gauss();
      else if (r < 0.20) m = 9.4603 + 0.08 * rng.gauss();
      else if (r < 0.215) m = 10.0233 + 0.085 * rng.gauss();
      else if (r < 0.30) m = 91.1876 + 2.4952 / 2 * std::tan(M_PI * (rng.uniform() - 0.5));
      else m = 0.25 * std::pow(1200.0, rng.uniform());
      if (m < 0.25 || m > 300) m = 0.25 + 299.75 * rng.uniform();
      const double ptParent = -8.0 * std::log(1 - rng.uniform());
      ROOT::Math::PtEtaPhiMVector parent(ptParent, 4.8 * rng.uniform() - 2.4, 2 * M_PI * rng.uniform() - M_PI, m);
      const double mmu = 0.105658, pstar = std::sqrt(std::max(0.0, m * m / 4 - mmu * mmu));
      const double cost = 2 * rng.uniform() - 1, sint = std::sqrt(1 - cost * cost), ph = 2 * M_PI * rng.uniform();
      ROOT::Math::PxPyPzMVector d1(pstar * sint * std::cos(ph), pstar * sint * std::sin(ph), pstar * cost, mmu);
      ROOT::Math::PxPyPzMVector d2(-d1.Px(), -d1.Py(), -d1.Pz(), mmu);
      ROOT::Math::Boost boost(parent.BoostToCM());
      boost.Invert();
      const int q = rng.uniform() < 0.5 ? 1 : -1;
      // A few same-sign pairs, as fakes would give.
      const int q2 = rng.uniform() < 0.05 ? q : -q;
      AddMuon(ev, ROOT::Math::PtEtaPhiMVector(boost(d1)), q);
      AddMuon(ev, ROOT::Math::PtEtaPhiMVector(boost(d2)), q2);
      nextra -= 2;
   }
   for (unsigned int i = 0; i < nextra; ++i) {
      ROOT::Math::PtEtaPhiMVector p(3 - 5.0 * std::log(1 - rng.uniform()), 4.8 * rng.uniform() - 2.4,
                                     2 * M_PI * rng.uniform() - M_PI, 0.105658);
      AddMuon(ev, p, rng.uniform() < 0.5 ? 1 : -1);
   }
   return ev;
}
}
#endif
"""

COLUMNS = ["nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]


def _declare() -> None:
    import ROOT

    if not ROOT.gInterpreter.Declare(_GENERATOR):
        raise RuntimeError("the dimuon generator failed to compile")


def define_events(df: Any, first_entry: int = 0, seed: int = 1) -> Any:
    """Define the event columns on an RDataFrame(N) whose entries start at ``first_entry``."""
    _declare()
    df = df.Define("_ev", f"distrdf_oscar::GenerateDimuonEvent(rdfentry_ + {first_entry}ULL, {seed}ULL)")
    df = df.Define("nMuon", "_ev.n")
    for column in ("pt", "eta", "phi", "mass", "charge"):
        df = df.Define(f"Muon_{column}", f"_ev.{column}")
    return df


def generate(
    directory: str,
    events: int,
    files: int = 4,
    seed: int = 1,
    tree: str = "Events",
    cluster_entries: int | None = None,
) -> list[str]:
    """Write the dataset as ``files`` ROOT files in ``directory``; reuse files already complete.

    ``cluster_entries``: entries per cluster (TTree auto-flush); by default ROOT's (a cluster per
    30 MB, one or two per file here). DistRDF never splits a cluster between ranges, so a job of
    N partitions has at most as many non-empty ranges as the dataset has clusters."""
    import ROOT

    if events < 1 or files < 1:
        raise ValueError(f"need at least one event and one file, got events={events}, files={files}")
    if cluster_entries is not None and cluster_entries < 1:
        raise ValueError(f"cluster_entries must be positive, got {cluster_entries}")
    options = ROOT.RDF.RSnapshotOptions()
    if cluster_entries is not None:
        options.fAutoFlush = cluster_entries
    os.makedirs(directory, exist_ok=True)
    paths = []
    per_file = [events // files + (1 if i < events % files else 0) for i in range(files)]
    first = 0
    for index, count in enumerate(per_file):
        clusters = f"_c{cluster_entries}" if cluster_entries is not None else ""
        path = os.path.join(directory, f"dimuon_{events}_{seed}{clusters}_{index:03d}.root")
        paths.append(path)
        if not _complete(path, tree, count):
            tmp = path + ".tmp.root"
            define_events(ROOT.RDataFrame(count), first, seed).Snapshot(tree, tmp, COLUMNS, options)
            os.replace(tmp, path)
        first += count
    return paths


def clusters(paths: list[str], tree: str = "Events") -> int:
    """How many clusters the files hold: the most non-empty ranges DistRDF can make of them."""
    import ROOT

    count = 0
    for path in paths:
        f = ROOT.TFile.Open(path)
        try:
            t = f.Get(tree)
            it = t.GetClusterIterator(0)
            while it.Next() < t.GetEntries():
                count += 1
        finally:
            f.Close()
    return count


def _complete(path: str, tree: str, entries: int) -> bool:
    import ROOT

    if not os.path.exists(path):
        return False
    f = ROOT.TFile.Open(path)
    try:
        t = f.Get(tree) if f and not f.IsZombie() else None
        return t is not None and bool(t) and t.GetEntries() == entries
    finally:
        if f:
            f.Close()
