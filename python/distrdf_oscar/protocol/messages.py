"""Every message body of the file-driven protocol, typed (docs/protocol.md says who writes which).

Keys come from ``layout``; what is stored under them is defined here (plans in ``plan``). Each
message is a frozen dataclass whose JSON form is its fields; ``from_json`` checks every field, so a
malformed body fails naming the message and the field instead of a ``KeyError`` deep in a function.
Unknown fields are ignored: a newer writer may add some.
"""

from __future__ import annotations

import json
import traceback
import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any, Self

from .root_errors import headline


class MessageError(ValueError):
    """A protocol object whose content is not the message its key promises."""


def _check(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field type ``hint`` wants it (JSON lists become tuples), else MessageError."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            try:
                return _check(option, value, where)
            except MessageError:
                continue
        raise MessageError(f"{where} must be {hint}, got {value!r:.80}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise MessageError(f"{where} must be a list, got {value!r:.80}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], item, where) for item in value)
        if len(value) != len(args):
            raise MessageError(f"{where} must have {len(args)} items, got {value!r:.80}")
        return tuple(_check(arg, item, where) for arg, item in zip(args, value, strict=True))
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(origin or hint, type) and isinstance(value, origin or hint):
        return value
    raise MessageError(f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r:.80}")


class Message:
    """JSON (de)serialisation shared by every message dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_dict(cls, raw: Any) -> Self:
        name = cls.__name__
        if not isinstance(raw, dict):
            raise MessageError(f"{name}: expected a JSON object, got {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name in raw:
                values[f.name] = _check(hints[f.name], raw[f.name], f"{name}.{f.name}")
            elif f.default is MISSING and f.default_factory is MISSING:
                raise MessageError(f"{name} lacks the field {f.name!r}")
        return cls(**values)

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise MessageError(f"{cls.__name__}: not JSON ({exc})") from None
        return cls.from_dict(raw)


@dataclass(frozen=True)
class Manifest(Message):
    """``jobs/<job>/manifest.json``: the job is alive while it exists (functions check it)."""

    job: str
    created: float
    plan: dict[str, Any]


@dataclass(frozen=True)
class Lease(Message):
    """``jobs/<job>/lease.json``: rewritten by the waiting client; the job is alive while the
    object's age (on the storage server's clock) is under ``ttl`` seconds."""

    job: str
    ttl: float
    owner: str = ""  # user@host of the waiting client, for ``distrdf-oscar jobs``


@dataclass(frozen=True)
class MapperTrigger(Message):
    """``triggers/<job>/<lo>_<hi>.json`` (and its retries): one mapper call, ranges ``[lo, hi)``."""

    job: str
    range_id: int  # lo: the call's first range
    range: str  # DistRDF's range object, cloudpickled and base64-encoded
    payload: str  # key of the pickled mapper and the names of the distributed files
    output: str  # key of the partial the mapper writes, covering all the call's ranges
    more: tuple[str, ...] = ()  # the call's further ranges, lo + 1, lo + 2, ..., encoded as ``range``
    claim: str = ""  # a key to claim before working (pool jobs: the pool and overflow share it)
    # What the job declares in a process (its initialize functions, C++ code and distributed files),
    # as a digest: a pool hands a process on only to a later job that declares the same (pool.py).
    environment: str = ""
    # An inline tree's call: its writer merges the groups it completes, up the tree (TreePlan.inline).
    merges_upwards: bool = False

    @property
    def interval(self) -> tuple[int, int]:
        return self.range_id, self.range_id + 1 + len(self.more)


@dataclass(frozen=True)
class MapperPayload:
    """``jobs/<job>/mapper.pkl``: DistRDF's mapper (a callable, so cloudpickled, not JSON) and the
    names of the files distributed with it, per kind, under ``jobs/<job>/files/``."""

    mapper: Any
    headers: tuple[str, ...] = ()
    shared_libraries: tuple[str, ...] = ()
    pcms: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    # Input files the user named by a relative path: (as written, where the file is), for the
    # mappers to resolve them as written (protocol/datasets.py PathPolicy).
    relative_inputs: tuple[tuple[str, str], ...] = ()

    KINDS = ("files", "pcms", "headers", "shared_libraries")  # in the order a function fetches them

    def names(self, kind: str) -> tuple[str, ...]:
        if kind not in self.KINDS:
            raise MessageError(f"mapper payload: no kind of distributed file {kind!r}")
        names: tuple[str, ...] = getattr(self, kind)
        return names


@dataclass(frozen=True)
class Heartbeat(Message):
    """``pool/workers/<worker>.json``: a pool worker is alive while the object is younger than
    ``ttl`` (on the storage server's clock)."""

    worker: str
    ttl: float
    served: int  # mapper calls computed so far
    jobs: tuple[str, ...] = ()  # the jobs it has a process for now


@dataclass(frozen=True)
class TreeRetry(Message):
    """A retry trigger for the tree reducer: merge the group covering ranges ``[lo, hi)``."""

    job: str
    interval: tuple[int, int]


@dataclass(frozen=True)
class Batch(Message):
    """``batches/<job>/<index>.json``: what one batch reducer merges, written once by the coordinator."""

    job: str
    index: int
    inputs: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class BatchRetry(Message):
    """A retry trigger for the batch reducer: merge batch ``index`` (its batch file says what)."""

    job: str
    index: int
    file: str = ""  # the batch file's key when not ``batches/<job>/<index>.json`` (a pool job's)


@dataclass(frozen=True)
class ErrorMarker(Message):
    """``errors/<job>/<who>.json``: a function failed. ``retryable`` when a retry may succeed;
    ``unconfigured`` for the unsigned report of a function that could not even start; ``crash``
    when its process died (a crash is retried once, however many retries are allowed)."""

    job: str
    who: str  # role and trigger, e.g. "mapper-000003_000004"
    service: str
    trigger: str  # key of the triggering object
    output: str | None  # the key the failed task was to produce, once known
    retryable: bool
    error: str
    traceback: str
    unconfigured: bool = False
    crash: str | None = None  # how the process died (e.g. "SIGSEGV"); the traceback is its output's tail
    worker: str = (
        ""  # the OSCAR job (JOB_UUID) or pool worker that failed: `distrdf-oscar logs` reads its logs
    )

    @classmethod
    def from_exception(
        cls,
        job: str,
        who: str,
        service: str,
        trigger: str,
        output: str | None,
        exc: BaseException,
        retryable: bool,
        unconfigured: bool = False,
        worker: str = "",
    ) -> ErrorMarker:
        return cls(
            job=job,
            who=who,
            service=service,
            trigger=trigger,
            output=output,
            retryable=retryable,
            error=headline(exc),
            traceback="".join(traceback.format_exception(exc)),
            unconfigured=unconfigured,
            worker=worker,
        )
