"""The protocol's message bodies (messages.py): what one side writes, the other reads back unchanged,
and a malformed body fails naming the message and the field."""

from __future__ import annotations

import json

import pytest

from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.messages import (
    Batch,
    BatchRetry,
    ErrorMarker,
    Manifest,
    MapperTrigger,
    MessageError,
    TreeRetry,
)

KEYS = layout.JobKeys("j20261124120000-0123abcd")

MESSAGES = [
    Manifest(job=KEYS.job_id, created=1.5, plan={"mode": "tree", "npartitions": 2}),
    MapperTrigger(
        job=KEYS.job_id,
        range_id=3,
        range="cGlja2xl",
        payload=KEYS.mapper_payload,
        output=KEYS.tree_partial(3, 4),
    ),
    TreeRetry(job=KEYS.job_id, interval=(0, 4)),
    Batch(job=KEYS.job_id, index=1, inputs=(KEYS.partial(0, 1), KEYS.batch_result(0)), output=KEYS.result),
    BatchRetry(job=KEYS.job_id, index=1),
    ErrorMarker(
        job=KEYS.job_id,
        who="mapper-000003_000004",
        service="distrdf-mapper",
        trigger=KEYS.trigger(3),
        output=None,
        retryable=False,
        error="ValueError: x",
        traceback="Traceback ...",
    ),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_reads_back_as_written(message):
    assert type(message).from_json(message.to_json()) == message


def test_the_json_form_is_the_documented_one():
    # docs/protocol.md documents these field names; functions of an older release read them.
    assert json.loads(MESSAGES[3].to_json()) == {
        "job": KEYS.job_id,
        "index": 1,
        "inputs": [KEYS.partial(0, 1), KEYS.batch_result(0)],
        "output": KEYS.result,
    }
    assert json.loads(MESSAGES[2].to_json())["interval"] == [0, 4]


def test_unknown_fields_are_ignored_so_newer_writers_can_add_some():
    body = json.loads(MESSAGES[4].to_json()) | {"added_later": True}
    assert BatchRetry.from_dict(body) == MESSAGES[4]


def test_an_error_marker_carries_the_exception_and_its_traceback():
    try:
        raise KeyError("Muon_pt")
    except KeyError as exc:
        marker = ErrorMarker.from_exception(
            KEYS.job_id, "mapper-x", "svc", KEYS.trigger(0), None, exc, retryable=False
        )
    assert marker.error == "KeyError: 'Muon_pt'"
    assert "raise KeyError" in marker.traceback
    assert marker.unconfigured is False


@pytest.mark.parametrize(
    ("cls", "body", "message"),
    [
        (MapperTrigger, b"[]", "MapperTrigger: expected a JSON object, got list"),
        (MapperTrigger, b"{", "MapperTrigger: not JSON"),
        (Batch, b'{"job": "j", "index": 0, "output": "o"}', "Batch lacks the field 'inputs'"),
        (Batch, b'{"job": "j", "index": 0, "inputs": "a,b", "output": "o"}', "Batch.inputs must be a list"),
        (TreeRetry, b'{"job": "j", "interval": [1]}', "TreeRetry.interval must have 2 items"),
        (BatchRetry, b'{"job": "j", "index": true}', "BatchRetry.index must be int"),
        (
            ErrorMarker,
            (
                b'{"job": "j", "who": "w", "service": "s", "trigger": "t", "output": 3, "retryable": false,'
                b' "error": "e", "traceback": "t"}'
            ),
            "ErrorMarker.output must be str | None",
        ),
    ],
)
def test_malformed_bodies_fail_naming_the_message_and_field(cls, body, message):
    with pytest.raises(MessageError) as caught:
        cls.from_json(body)
    assert str(caught.value).startswith(message)
