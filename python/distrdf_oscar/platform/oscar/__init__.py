"""A real OSCAR cluster, as the client and the operator reach it: its REST API through
oscar-python (``cluster.py``), the errors it answers with (``errors.py``), oscar-cli's configured
clusters (``cli_config.py``), a deployment's warm pool and its storage account (``warm_pool.py``,
``pool_account.py``), and the finished OSCAR jobs a client deletes (``finished_jobs.py``)."""
