"""The analyst's side: the ``executor=`` dispatch and DistRDF backend, the executor, a job's
life (offering calls, following, recovering), pools as the client sees them, the simulator that
chooses plans, and reports of finished jobs."""
