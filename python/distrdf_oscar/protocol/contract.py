"""What the functions, the deployment that defines them and the embedded platform that runs them
agree on: entry points, exit codes and environment variables. One place, so that no layer imports
another's internals to learn a name."""

from __future__ import annotations

# role -> the Python entry point its image runs (``python -m distrdf_oscar.functions <role>``).
ENTRYPOINTS = {
    "mapper": "distrdf_oscar.functions.mapper:main",
    "reducer": "distrdf_oscar.functions.tree_reducer:main",
    "coordinator": "distrdf_oscar.functions.coordinator:main",
    "batch": "distrdf_oscar.functions.batch_reducer:main",
    "pool": "distrdf_oscar.functions.pool:main",  # the warm pool: an exposed service
}
# A function's exit status after it reported its own failure: the service script reports any other.
REPORTED_EXIT = 3
# The crash report the service script runs (``python -m ... <role> <status> <output file>``); the
# embedded platform's pre-started workers, which run an entry point without the script, call
# CRASH_HOOK instead with the status and output in CRASH_STATUS_VARIABLE / CRASH_OUTPUT_VARIABLE.
CRASH_REPORT_MODULE = "distrdf_oscar.functions.crash"
CRASH_HOOK = "distrdf_oscar.functions.crash:on_prestarted_crash"
CRASH_STATUS_VARIABLE = "DRO_CRASH_STATUS"
CRASH_OUTPUT_VARIABLE = "DRO_CRASH_OUTPUT"

# -- every service's environment ------------------------------------------------------------------
ENTRYPOINT_VARIABLE = "DRO_ENTRYPOINT"  # its role's entry point (the pre-started workers run it)
PYTHON_VARIABLE = "DRO_PYTHON"  # the interpreter the script runs (default: the image's python3)
SIGNING_KEY_VARIABLE = "DRO_SIGNING_KEY"  # a secret: the deployment's signing key
KEY_ID_VARIABLE = "DRO_KEY_ID"  # that key's public identifier, to tell deployments apart
VERSION_VARIABLE = "DRO_VERSION"  # the distrdf-oscar release that defined the service

# -- where a function finds its storage (OSCAR's supervisor mounts both) ------------------------
FUNCTION_CONFIG = "/oscar/config/function_config.yaml"
PROVIDER_SECRETS = "/var/run/secrets/providers/minio.default"
FUNCTION_CONFIG_VARIABLE = "DRO_FUNCTION_CONFIG"  # the embedded platform's copy of the config
PROVIDER_SECRETS_VARIABLE = "DRO_PROVIDER_SECRETS"  # ... and of the mounted keys

# -- the warm pool's service (an exposed service: no mounted keys, no event) ---------------------
POOL_PORT_VARIABLE = "DRO_POOL_PORT"  # the service's api_port, which the worker serves the probes on
POOL_BUCKET_VARIABLE = "DRO_BUCKET"  # the deployment's base bucket
POOL_SERVICE_VARIABLE = "DRO_POOL_SERVICE"  # the pool service's name, for error reports
POOL_KEYS = ("DRO_STORAGE_ACCESS_KEY", "DRO_STORAGE_SECRET_KEY")  # its storage keys, as secrets

# -- the embedded platform's fault injection --------------------------------------------------
FAILPOINT_VARIABLE = "DRO_FAILPOINT"  # ``<point>:<token dir>``: where an invocation must die
