"""An OSCAR cluster through ``oscar-python``: configuration and long-lived services.

The same code drives a real cluster and the embedded emulator. Services are
created once per deployment and updated in place; never per job, because on
OSCAR every service create/delete reconfigures and restarts MinIO.
"""

from __future__ import annotations

import json
from typing import Any

from ..services.definitions import ROLES, Deployment
from ..storage import StorageConfig

# Fields of a service definition that deploy manages (compared to detect changes).
_MANAGED = ("image", "cpu", "memory", "script", "input", "output")


class OSCARError(RuntimeError):
    """The OSCAR cluster refused or could not be reached; the message says which."""


class OSCARCluster:
    def __init__(self, endpoint: str, *, user: str | None = None, password: str | None = None,
                 token: str | None = None, verify: bool = True) -> None:
        from oscar_python.client import Client

        if not endpoint.startswith(("http://", "https://")):
            raise OSCARError(f"OSCAR endpoint {endpoint!r} must start with http:// or https://")
        options: dict[str, Any] = {"cluster_id": "distrdf-oscar", "endpoint": endpoint.rstrip("/"), "ssl": verify}
        if token:
            options["oidc_token"] = token
        elif user and password:
            options.update(user=user, password=password)
        else:
            raise OSCARError("OSCAR credentials missing: give OSCAR_USER and OSCAR_PASSWORD, or OSCAR_TOKEN")
        self.endpoint = options["endpoint"]
        self.client = Client(options)

    def _call(self, what: str, method, *args):
        import requests

        try:
            return method(*args)
        except requests.exceptions.SSLError as exc:
            raise OSCARError(f"TLS verification of {self.endpoint} failed while trying to {what}: {exc.__class__.__name__}"
                             " (set OSCAR_SSL_VERIFY=false only for a cluster you trust)") from None
        except requests.exceptions.ConnectionError:
            raise OSCARError(f"cannot reach OSCAR at {self.endpoint} to {what}") from None
        except requests.exceptions.Timeout:
            raise OSCARError(f"OSCAR at {self.endpoint} timed out while trying to {what}") from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            if status == 401:
                raise OSCARError(f"OSCAR at {self.endpoint} rejected the credentials (401) while trying to {what}") from None
            if status == 403:
                raise OSCARError(f"OSCAR at {self.endpoint} denied access (403) while trying to {what}") from None
            body = (exc.response.text or "").strip()[:300] if exc.response is not None else ""
            raise OSCARError(f"OSCAR at {self.endpoint} answered {status} while trying to {what}: {body}") from None

    def _json(self, what: str, method, *args):
        return json.loads(self._call(what, method, *args).text or "null")

    def config(self) -> dict[str, Any]:
        return self._json("read /system/config", self.client.get_cluster_config)

    def info(self) -> dict[str, Any]:
        return self._json("read /system/info", self.client.get_cluster_info)

    def storage_config(self, bucket: str, verify: bool) -> StorageConfig:
        """Storage as the cluster advertises it (its ``minio_provider``)."""
        provider = self.config().get("minio_provider") or {}
        missing = [k for k in ("endpoint", "access_key", "secret_key") if not provider.get(k)]
        if missing:
            raise OSCARError(f"OSCAR at {self.endpoint} does not advertise storage ({', '.join(missing)} missing in "
                             "/system/config minio_provider): set MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY")
        return StorageConfig(endpoint=provider["endpoint"], access_key=provider["access_key"],
                             secret_key=provider["secret_key"], region=provider.get("region") or "us-east-1",
                             verify=verify and bool(provider.get("verify", True)), bucket=bucket)

    def services(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self._json("list services", self.client.list_services) or []}

    def deploy(self, deployment: Deployment) -> dict[str, str]:
        """Create missing services, update changed ones; returns name -> created/updated/unchanged."""
        existing = self.services()
        outcome = {}
        for wanted in deployment.services():
            name = wanted["name"]
            current = existing.get(name)
            if current is None:
                self._call(f"create service {name}", self.client.create_service, wanted)
                outcome[name] = "created"
            elif _differs(current, wanted):
                self._call(f"update service {name}", self.client.update_service, name, wanted)
                outcome[name] = "updated"
            else:
                outcome[name] = "unchanged"
        return outcome

    def undeploy(self, deployment: Deployment) -> list[str]:
        existing = self.services()
        removed = []
        for role in ROLES:
            name = deployment.service_name(role)
            if name in existing:
                self._call(f"remove service {name}", self.client.remove_service, name)
                removed.append(name)
        return removed

    def jobs(self, service: str) -> dict[str, Any]:
        return self._json(f"list jobs of {service}", self.client.list_jobs, service) or {}


def _differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for field in _MANAGED:
        if _normalise(current.get(field)) != _normalise(wanted.get(field)):
            return True
    have = (current.get("environment") or {}).get("variables") or {}
    return have != wanted["environment"]["variables"]


def _normalise(value):
    if isinstance(value, list):
        return [{k: v for k, v in item.items() if v not in (None, "", [], {})} for item in value]
    return value
