"""The df102-style dimuon spectrum analysis used by the demo and the benchmarks."""

from __future__ import annotations

from typing import Any

SPECTRUM = ("Dimuon_mass", "Dimuon mass;m_{#mu#mu} (GeV);N_{Events}", 30000, 0.25, 300)


def book_dimuon_spectrum(df: Any) -> dict[str, Any]:
    """Book the spectrum (and a few scalars) on ``df``; returns the lazy results."""
    two = df.Filter("nMuon == 2", "Events with exactly two muons")
    opposite = two.Filter("Muon_charge[0] != Muon_charge[1]", "Muons with opposite charge")
    with_mass = opposite.Define(
        "Dimuon_mass", "ROOT::VecOps::InvariantMass(Muon_pt, Muon_eta, Muon_phi, Muon_mass)"
    )
    return {
        "spectrum": with_mass.Histo1D(SPECTRUM, "Dimuon_mass"),
        "events": df.Count(),
        "dimuons": with_mass.Count(),
        "mean_mass": with_mass.Mean("Dimuon_mass"),
    }


def draw_spectrum(histogram: Any, path: str) -> None:
    """Save the spectrum as df102 shows it (log-log, resonances labelled)."""
    import ROOT

    ROOT.gROOT.SetBatch(True)
    ROOT.gStyle.SetOptStat(0)
    canvas = ROOT.TCanvas("dimuon", "dimuon", 1000, 700)
    canvas.SetLogx()
    canvas.SetLogy()
    histogram.SetTitle("")
    histogram.GetXaxis().SetTitleSize(0.04)
    histogram.GetYaxis().SetTitleSize(0.04)
    histogram.Draw("HIST")
    label = ROOT.TLatex()
    label.SetNDC(True)
    label.SetTextSize(0.04)
    for x, y, text in (
        (0.40, 0.82, "J/#psi"),
        (0.43, 0.72, "#psi'"),
        (0.52, 0.70, "#Upsilon"),
        (0.80, 0.60, "Z"),
        (0.15, 0.93, "distrdf-oscar: synthetic dimuon spectrum"),
    ):
        label.DrawLatex(x, y, text)
    canvas.SaveAs(path)
