"""The computation graph the partial-format and end-to-end tests share: every DistRDF action."""

from __future__ import annotations


def book_all(df):
    """Every DistRDF action and most transformations, on columns any dimuon dataset has."""
    df = df.Define("x", "Muon_pt.size() > 0 ? double(Muon_pt[0]) : -1.0").Define("w", "0.5 + nMuon")
    df = df.Define("i", "int(nMuon)").Alias("n_alias", "nMuon").Redefine("w", "w * 2")
    sel = df.Filter("n_alias >= 1", "at least one muon")
    varied = df.Vary("x", "ROOT::RVecD{x * 0.9, x * 1.1}", ["down", "up"], "scale")
    return [
        df.Count(),
        sel.Count(),
        df.Sum("x"),
        df.Sum("i"),
        df.Mean("x"),
        df.Min("x"),
        df.Max("i"),
        df.StdDev("x"),
        df.Stats("x", "w"),
        sel.Histo1D(("h1", "h1", 100, 0, 50), "x", "w"),
        df.Histo2D(("h2", "h2", 20, 0, 50, 5, 0, 5), "x", "i"),
        df.Histo3D(("h3", "h3", 10, 0, 50, 5, 0, 5, 4, 0, 4), "x", "i", "w"),
        df.HistoND(("hn", "hn", 2, [10, 5], [0.0, 0.0], [50.0, 5.0]), ["x", "i"]),
        df.HistoNSparseD(("hs", "hs", 2, [10, 5], [0.0, 0.0], [50.0, 5.0]), ["x", "i"]),
        df.Profile1D(("p1", "p1", 20, 0, 50), "x", "w"),
        df.Profile2D(("p2", "p2", 10, 0, 50, 5, 0, 5), "x", "i", "w"),
        df.Filter("nMuon == 3").Graph("x", "w"),
        df.Filter("nMuon == 3").GraphAsymmErrors("x", "w", "w", "w", "w", "w"),
        df.Filter("nMuon == 4").AsNumpy(["x", "i"], lazy=True),
        varied.Histo1D(("hv", "hv", 50, 0, 50), "x"),
    ]


def values(results):
    out = []
    for r in results:
        v = r.GetValue()
        out.append(v.Clone() if hasattr(v, "Clone") else v)
    return out


def write_friend_trees(files, folder) -> list[str]:
    """A friend tree ``Friends`` with a ``weight`` per entry beside each ``Events`` file:
    ``<folder>/friend<i>.root``."""
    import os

    import ROOT

    friends = []
    for index, path in enumerate(files):
        entries = ROOT.RDataFrame("Events", str(path)).Count().GetValue()
        friend = os.path.join(str(folder), f"friend{index}.root")
        ROOT.RDataFrame(entries).Define("weight", f"0.5 + (rdfentry_ % 4) + {index}").Snapshot(
            "Friends", friend, ["weight"]
        )
        friends.append(friend)
    return friends


def friend_chain(files, friends):
    """The ``Events`` chain of ``files`` with the ``Friends`` chain of ``friends`` as its friend;
    returns both (the friend chain must outlive the main one)."""
    import ROOT

    main, friend = ROOT.TChain("Events"), ROOT.TChain("Friends")
    for name in files:
        main.Add(str(name))
    for name in friends:
        friend.Add(str(name))
    main.AddFriend(friend)
    return main, friend
