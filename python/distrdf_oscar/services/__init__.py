"""Entry points of the functions OSCAR runs: mapper, tree reducer, coordinator, batch reducer.

Each reads OSCAR's function contract (``INPUT_FILE_PATH``, ``TMP_OUTPUT_DIR``,
``EVENT``, the function config with the storage credentials) and writes its
results as files under ``TMP_OUTPUT_DIR`` named by their object key, which
the supervisor uploads to the deployment's bucket. The same ``main()`` runs
from the bash script in a cold container and in a warm worker.
"""
