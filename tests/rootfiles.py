"""Writing small ROOT files for the merge tests."""

from __future__ import annotations

import ROOT


def write_objects(path, **objects) -> str:
    """A ROOT file at ``path`` holding ``objects`` under their keyword names."""
    f = ROOT.TFile(str(path), "RECREATE")
    for name, obj in objects.items():
        f.WriteObject(obj, name)
    f.Close()
    return str(path)
