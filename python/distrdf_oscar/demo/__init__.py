"""The demo workload: a synthetic dimuon dataset and the analysis the demo and benchmarks run on it."""
