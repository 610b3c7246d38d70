"""Entry points of the functions OSCAR runs: mapper, tree reducer, coordinator, batch reducer.

Each reads OSCAR's function contract (``INPUT_FILE_PATH``, ``TMP_OUTPUT_DIR``,
``EVENT``, the function config with the storage credentials) and uploads its
results to the deployment's bucket by object key. The same ``main()`` runs
from the service script in a cold container and in a warm worker.
"""
