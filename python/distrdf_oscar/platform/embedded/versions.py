"""Which OSCAR release the embedded platform behaves as, and what differs between releases.

Each property names the release that introduced a behaviour and where OSCAR's
source shows it (github grycap/oscar, ``git show vX.Y.Z:path``). Only behaviours
the project depends on are modelled; ``docs/local-platform.md`` lists the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The newest patch release of each supported minor version.
RELEASES = {
    "3.5": (3, 5, 3),
    "3.6": (3, 6, 5),
    "3.7": (3, 7, 1),
    "4.0": (4, 0, 0),
    "4.1": (4, 1, 2),
}
OLDEST, NEWEST = (3, 5, 0), (4, 1, 99)
DEFAULT = "4.1"
KUEUE_SINCE = (3, 7, 0)  # the first release with KUEUE_ENABLE (pkg/types/config.go)
KUEUE_SUFFIX = "+kueue"  # "4.1+kueue": the release deployed with KUEUE_ENABLE=true

# Fields OSCAR 4.1 removed from its service type; Go's JSON decoding drops them silently.
REMOVED_IN_4_1 = ("replicas", "delegation", "rescheduler_threshold")
JOB_LISTING_LIMIT = 70  # JobListingLimit's default (3.6.4 and later)


@dataclass(frozen=True)
class OscarVersion:
    release: tuple[int, int, int]
    kueue_enable: bool = False  # OSCAR's KUEUE_ENABLE, as the cluster's operator set it

    @classmethod
    def parse(cls, text: str) -> OscarVersion:
        """``"4.1"`` (its newest patch release) or ``"3.6.3"``; a leading ``v`` is allowed. A
        ``+kueue`` suffix (``"4.1+kueue"``, 3.7 and later) deploys it with ``KUEUE_ENABLE=true``;
        without it Kueue is off, as every OSCAR Helm chart from 3.7.0 to 4.1.2 sets it
        (grycap/helm-charts ``oscar/values.yaml`` ``kueue.enable: "false"``, also in the packaged
        ``docs/oscar-3.7.0.tgz``; OSCAR's own default when the variable is unset is ``true``,
        v4.1.2 pkg/types/config.go)."""
        text = str(text).strip()
        kueue = text.endswith(KUEUE_SUFFIX)
        if kueue:
            text = text[: -len(KUEUE_SUFFIX)]
        match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
        if not match:
            raise ValueError(f"oscar_version must look like '4.1', '3.6.3' or '4.1+kueue', got {text!r}")
        major, minor, patch = match.groups()
        if patch is None:
            release = RELEASES.get(f"{major}.{minor}")
            if release is None:
                raise ValueError(f"OSCAR {text} is not supported; choose one of {', '.join(RELEASES)}")
        else:
            release = (int(major), int(minor), int(patch))
        if not OLDEST <= release <= NEWEST:
            raise ValueError(f"OSCAR {text} is not supported; choose a release from 3.5 to 4.1")
        if kueue and release < KUEUE_SINCE:
            raise ValueError(f"OSCAR {text} has no Kueue (KUEUE_ENABLE came with 3.7)")
        return cls(release, kueue)

    @property
    def number(self) -> str:
        """The release as ``/system/info`` reports it: ``"4.1.2"``."""
        return ".".join(map(str, self.release))

    @property
    def label(self) -> str:
        """``"v4.1.2"``, with ``+kueue`` when Kueue is on: what :meth:`parse` reads back."""
        return "v" + self.number + (KUEUE_SUFFIX if self.kueue_enable else "")

    @property
    def refuses_existing_input_bucket(self) -> bool:
        """Creating a service whose input bucket exists answers 500 and rolls back (3.6.0,
        pkg/handlers/create.go createBuckets, pkg/utils/minio.go createBucket); before, it is logged."""
        return self.release >= (3, 6, 0)

    @property
    def deletes_input_buckets(self) -> bool:
        """Deleting a service removes its input buckets and their objects (3.6.0,
        pkg/handlers/delete.go DeleteMinIOBuckets); before, buckets and objects stay."""
        return self.release >= (3, 6, 0)

    @property
    def pages_job_listing(self) -> bool:
        """``/system/logs/NAME`` answers ``{"jobs", "next_page"}``, at most ``JOB_LISTING_LIMIT``
        per page in name order (3.6.4, pkg/handlers/logs.go); before, a flat ``{job: info}`` map."""
        return self.release >= (3, 6, 4)

    @property
    def lists_podless_jobs(self) -> bool:
        """A job without a pod (Kueue holds it) is listed as ``Suspended`` (3.7.0); before, it is
        not listed at all."""
        return self.release >= (3, 7, 0)

    @property
    def delivers_secrets(self) -> bool:
        """A service's ``environment.secrets`` reach its functions (3.6.0): in 3.5 the pod refers to
        a secret name that create.go never makes, so functions never see them."""
        return self.release >= (3, 6, 0)

    @property
    def keeps_token_on_update(self) -> bool:
        """An update keeps the service's token (4.0.0); before, checkValues makes a new one while
        MinIO's webhook keeps sending the old, so after an update storage events are refused."""
        return self.release >= (4, 0, 0)

    @property
    def kueue(self) -> bool:
        """Kueue on (``KUEUE_ENABLE=true``, 3.7.0 and later; off unless asked for, see :meth:`parse`).
        A job of a service whose owner is not ``cluster_admin`` is created suspended for a queue made
        only for OIDC owners (pkg/handlers/job.go), so an ownerless service's jobs never start; and
        creating or updating an exposed service checks its Workload's admission once, at once
        (pkg/backends/resources/expose.go createDeployment/UpdateExpose, pkg/utils/kueue.go
        CheckWorkloadAdmited, v3.7.0 to v4.1.2), which never passes (see registry.py)."""
        return self.kueue_enable and self.release >= KUEUE_SINCE

    @property
    def sets_service_name(self) -> bool:
        """``OSCAR_SERVICE_NAME`` in the function's environment (4.0.0)."""
        return self.release >= (4, 0, 0)

    @property
    def removed_fields(self) -> tuple[str, ...]:
        """Service fields dropped from the type in 4.1.0 (pkg/types/service.go)."""
        return REMOVED_IN_4_1 if self.release >= (4, 1, 0) else ()

    # -- exposed services (pkg/backends/resources/expose.go; pkg/types/expose.go in 3.5) -------

    @property
    def expose_port_lists(self) -> bool:
        """``expose.api_port`` and ``expose.nodePort`` are JSON lists (4.1.0, pkg/types/service.go
        ``APIPort []int``); before, single integers. Go's decoding refuses the other shape (400)."""
        return self.release >= (4, 1, 0)

    @property
    def expose_fields(self) -> dict[str, str]:
        """The fields of the release's ``Expose`` type and their JSON kinds (pkg/types/service.go)."""
        port = "int_list" if self.expose_port_lists else "int"
        fields = {
            "min_scale": "int32",
            "max_scale": "int32",
            "api_port": port,
            "cpu_threshold": "int32",
            "rewrite_target": "bool",
            "nodePort": "int32_list" if self.expose_port_lists else "int32",
            "default_command": "bool",
            "set_auth": "bool",
        }
        if self.release >= (3, 6, 5):
            fields["health_path"] = "string"
        if self.release >= (4, 0, 0):
            fields["probe_mode"] = "string"
        if self.release >= (4, 1, 0):
            fields["auth_type"] = "string"
        return fields

    @property
    def exposed_probe_profile(self) -> str:
        """Which probes an exposed pod gets (expose.go getPodTemplateSpec): ``none`` up to 3.6.1;
        ``early`` (3.6.2: liveness and readiness on ``/``); ``health`` (3.6.5: on ``health_path``,
        liveness after 30 s); ``startup`` (4.0.0: a startup probe, liveness after 60 s, 12 failures)."""
        if self.release >= (4, 0, 0):
            return "startup"
        if self.release >= (3, 6, 5):
            return "health"
        if self.release >= (3, 6, 2):
            return "early"
        return "none"

    @property
    def rolls_back_failed_create(self) -> bool:
        """A create whose Kubernetes objects fail is undone (3.7.0, create.go ``back.DeleteService``);
        before, the half-made service (its definition, a Deployment without HPA) stays."""
        return self.release >= (3, 7, 0)

    @property
    def restores_failed_update(self) -> bool:
        """An update whose Kubernetes objects fail is undone by updating back to the old definition
        (3.7.0, update.go); before, the new definition stays."""
        return self.release >= (3, 7, 0)

    @property
    def deployment_status(self) -> bool:
        """``GET /system/services/NAME/deployment`` (and ``/deployment/logs``, ``?include=deployment``)
        exist (4.0.0, main.go, pkg/handlers/deployment.go)."""
        return self.release >= (4, 0, 0)

    @property
    def exposed_lifecycle(self) -> bool:
        """``POST /system/services/NAME/stop|start|restart`` exist (4.1.0, pkg/handlers/lifecycle.go);
        a zero-replica Deployment reports ``stopped`` (4.0 says ``pending``)."""
        return self.release >= (4, 1, 0)
