"""The FaaS-supervisor contract around one invocation: input, environment, outputs.

What OSCAR's supervisor does inside a function's container, done here by the
platform around either execution path (a cold ``bash`` process or a pre-started
worker): parse the event, download the triggering object into
``$TMP_INPUT_DIR``, set the environment, and afterwards upload every file
under ``$TMP_OUTPUT_DIR`` to each output whose prefix/suffix filters match.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from minio import Minio

from .job_records import Job
from .provisioning import output_key
from .versions import OscarVersion

_STORAGE_EVENT_SOURCES = ("minio:s3", "aws:s3")
# Linux refuses a single environment string over 128 KiB (MAX_ARG_STRLEN);
# a larger request body still reaches the function as its input file.
_MAX_EVENT_ENV = 120 * 1024


@dataclass
class ParsedEvent:
    text: str  # the body as text, what OSCAR puts in $EVENT
    event: Any  # the decoded JSON, if the body is JSON
    bucket: str = ""
    key: str = ""  # unescaped object key inside the bucket
    event_time: str = ""
    principal: str = ""  # the uploader's access key (MinIO's requestParameters.principalId)

    @property
    def is_storage(self) -> bool:
        return bool(self.bucket)


def parse_event(body: bytes) -> ParsedEvent:
    """Recognise a MinIO/S3 notification as the supervisor does; anything else is an 'unknown' event."""
    text = body.decode("utf-8", errors="replace")
    try:
        event = json.loads(text)
    except ValueError:
        return ParsedEvent(text=text, event=None)
    records = event.get("Records") if isinstance(event, dict) else None
    if records and isinstance(records[0], dict) and records[0].get("eventSource") in _STORAGE_EVENT_SOURCES:
        record = records[0]
        s3 = record.get("s3", {})
        # MinIO query-escapes the key in the record; the supervisor unescapes it.
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        return ParsedEvent(
            text=text,
            event=event,
            bucket=s3.get("bucket", {}).get("name", ""),
            key=key,
            event_time=record.get("eventTime", ""),
            principal=str((record.get("requestParameters") or {}).get("principalId") or ""),
        )
    return ParsedEvent(text=text, event=event)


class Invocation:
    """The per-invocation directory (removed afterwards) and the supervisor's steps."""

    def __init__(
        self,
        job: Job,
        client: Minio,
        jobs_dir: str,
        base_env: dict[str, str],
        config_path: str,
        version: OscarVersion,
    ) -> None:
        self.job = job
        self._client = client
        self._base_env = base_env
        self._config_path = config_path
        self._version = version
        self.dir = os.path.join(jobs_dir, job.name)
        self.input_dir = os.path.join(self.dir, "input")
        self.output_dir = os.path.join(self.dir, "output")
        self.work_dir = os.path.join(self.dir, "work")  # the function's cwd and TMPDIR
        # Stands for the pod's mount of the uploader's MinIO secret (/var/run/secrets/providers/...).
        self.secrets_dir = os.path.join(self.dir, "providers", "minio.default")
        # The script's output: the supervisor logs it only when the script ends (unless DEBUG).
        self.output_log = os.path.join(self.dir, "script.log")

    def prepare(self, keys: tuple[str, str]) -> dict[str, str]:
        """Create the directories, mount the MinIO ``keys`` (access, secret), stage the input and
        return the function's environment."""
        for path in (self.input_dir, self.output_dir, self.work_dir, self.secrets_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        service = self.job.service
        for filename, value in zip(("accessKey", "secretKey"), keys, strict=True):
            with open(os.path.join(self.secrets_dir, filename), "w", encoding="utf-8") as handle:
                handle.write(value)
        parsed = parse_event(self.job.body)
        contract: dict[str, str] = {
            "TMP_INPUT_DIR": self.input_dir,
            "TMP_OUTPUT_DIR": self.output_dir,
            "JOB_UUID": self.job.name,
            "DRO_FUNCTION_CONFIG": self._config_path,
            "DRO_PROVIDER_SECRETS": self.secrets_dir,
            "TMPDIR": self.work_dir,
        }
        if self._version.sets_service_name:
            contract.update(OSCAR_SERVICE_NAME=service["name"], OSCAR_SERVICE_TOKEN=service["token"])
        event_text = json.dumps(parsed.event) if parsed.is_storage else parsed.text
        if len(event_text) <= _MAX_EVENT_ENV:
            contract["EVENT"] = event_text.replace("\0", "")
        else:
            self.job.log(f"EVENT not set: the event has {len(event_text)} bytes (limit {_MAX_EVENT_ENV})")
        if parsed.is_storage:
            contract["STORAGE_OBJECT_KEY"] = parsed.key
            contract["EVENT_TIME"] = parsed.event_time
        if service.get("file_stage_in"):
            self.job.log("Skipping download of input file.")
        else:
            contract["INPUT_FILE_PATH"] = self._stage_input(parsed)

        env = dict(self._base_env)
        # Kubernetes gives explicit variables precedence over those from the secret.
        if self._version.delivers_secrets:
            env.update(service["environment"]["secrets"])
        env.update(service["environment"]["variables"])
        env.update(contract)
        return env

    def _stage_input(self, parsed: ParsedEvent) -> str:
        if parsed.is_storage:
            path = os.path.join(self.input_dir, os.path.basename(parsed.key))
            self.job.log(f"Downloading item from bucket '{parsed.bucket}' with key '{parsed.key}'")
            self._client.fget_object(parsed.bucket, parsed.key, path)
            self.job.log(f"INPUT_FILE_PATH variable set to '{path}'")
            return path
        # An 'unknown' event is itself the input: JSON as is, anything else
        # base64-decoded (oscar-python base64-encodes string inputs).
        path = os.path.join(self.input_dir, f"event-file-{uuid.uuid4()}")
        if parsed.event is not None:
            data = parsed.text.encode("utf-8")
        else:
            try:
                data = base64.b64decode(parsed.text)
            except (binascii.Error, ValueError):
                self.job.log("The event is neither JSON nor base64: stored as received")
                data = self.job.body
        with open(path, "wb") as handle:
            handle.write(data)
        self.job.log(f"INPUT_FILE_PATH variable set to '{path}'")
        return path

    def upload_outputs(self) -> None:
        """Upload ``$TMP_OUTPUT_DIR/<relname>`` to ``<output path>/<relname>`` for every matching output."""
        files = []
        for dirpath, _, filenames in os.walk(self.output_dir):
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                files.append((os.path.relpath(path, self.output_dir).replace(os.sep, "/"), path))
        files.sort()
        for output in self.job.service["output"]:
            prefixes = output.get("prefix") or []
            suffixes = output.get("suffix") or []
            for relname, path in files:
                if prefixes and not any(relname.startswith(p) for p in prefixes):
                    continue
                if suffixes and not any(relname.endswith(s) for s in suffixes):
                    continue
                bucket, key = output_key(output["path"], relname)
                self.job.log(f"Uploading file '{key}' to bucket '{bucket}'")
                self._client.fput_object(bucket, key, path)

    @property
    def live_output(self) -> bool:
        """Whether the script's output reaches the job's log as it is written (``log_level: DEBUG``)."""
        return self.job.service.get("log_level") == "DEBUG"

    def flush_output(self) -> None:
        """Append the script's output to the job's log, as the supervisor does when the script ends."""
        if self.live_output or not os.path.exists(self.output_log):
            return
        with open(self.output_log, "rb") as source, open(self.job.log_path, "ab") as log:
            shutil.copyfileobj(source, log)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
