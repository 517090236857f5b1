"""The informer's decoding (akv_issuer.runtime.decoding): pure functions on bytes."""

from __future__ import annotations

import json
from typing import Any, TypedDict

import msgspec
import pytest

from akv_issuer.runtime.decoding import (
    ObjectDecoder,
    Partial,
    decode_event,
    decode_list,
    whole,
)


class _Meta(TypedDict, total=False):
    name: str
    namespace: str
    resourceVersion: str
    labels: dict[str, str]


class _Shape(TypedDict, total=False):
    metadata: _Meta
    status: dict[str, Any]


OBJECT = {
    "apiVersion": "example.com/v1",
    "kind": "Thing",
    "metadata": {
        "name": "a",
        "namespace": "ns",
        "resourceVersion": "42",
        "labels": {"app": "x"},
        "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"big": "x" * 4000},
    "status": {"phase": "Done"},
}


def test_only_the_shape_is_decoded_and_the_whole_stays_reachable() -> None:
    raw = json.dumps(OBJECT).encode()
    obj = ObjectDecoder(_Shape).decode_object(raw)
    assert isinstance(obj, Partial)
    assert obj == {
        "metadata": {
            "name": "a",
            "namespace": "ns",
            "resourceVersion": "42",
            "labels": {"app": "x"},
        },
        "status": {"phase": "Done"},
    }
    assert whole(obj) == OBJECT
    obj.release()
    with pytest.raises(RuntimeError, match="only available during the handler call"):
        obj.whole()


def test_without_a_shape_objects_are_whole_dicts() -> None:
    obj = ObjectDecoder().decode_object(json.dumps(OBJECT).encode())
    assert type(obj) is dict
    assert obj == OBJECT
    assert whole(obj) is obj


def test_missing_fields_are_simply_absent() -> None:
    decoder = ObjectDecoder(_Shape)
    assert decoder.decode_object(b"{}") == {}
    assert decoder.decode_object(b'{"metadata": {"name": "b"}}') == {"metadata": {"name": "b"}}


def test_a_field_of_another_type_is_named_and_the_object_read_whole() -> None:
    raw = json.dumps({"metadata": {"name": "c", "labels": {"app": 7}}, "spec": {}}).encode()
    decoder = ObjectDecoder(_Shape)
    with pytest.raises(
        msgspec.ValidationError, match=r"Expected `str`, got `int` - at `\$\.metadata\.labels"
    ):
        decoder.decode_object(raw)
    obj, why = decoder.decode_lenient(raw)
    assert obj == {"metadata": {"name": "c", "labels": {"app": 7}}, "spec": {}}
    assert why is not None
    assert "$.metadata.labels" in why
    assert decoder.decode_lenient(b'{"metadata": {"name": "d"}}') == (
        {"metadata": {"name": "d"}},
        None,
    )


def test_something_that_is_no_object_is_an_error() -> None:
    decoder = ObjectDecoder(_Shape)
    for raw in (b"[1, 2]", b'"text"'):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode_lenient(raw)
    with pytest.raises(msgspec.DecodeError):
        decoder.decode_lenient(b'{"metadata": ')


def test_a_list_page() -> None:
    body = json.dumps(
        {
            "apiVersion": "example.com/v1",
            "kind": "ThingList",
            "metadata": {"resourceVersion": "77", "continue": "tok", "remainingItemCount": 3},
            "items": [OBJECT, {**OBJECT, "metadata": {**OBJECT["metadata"], "name": "b"}}],
        }
    ).encode()
    page = decode_list(body)
    assert page.resource_version == "77"
    assert page.continue_token == "tok"
    names = [ObjectDecoder(_Shape).decode_object(raw)["metadata"]["name"] for raw in page.items]
    assert names == ["a", "b"]


def test_the_last_page_and_an_empty_list() -> None:
    last = decode_list(b'{"kind": "ThingList", "metadata": {"resourceVersion": "5"}, "items": []}')
    assert (last.items, last.resource_version, last.continue_token) == ([], "5", "")
    empty = decode_list(
        b'{"kind": "ThingList", "metadata": {"resourceVersion": "6"}, "items": null}'
    )
    assert (empty.items, empty.resource_version) == ([], "6")
    with pytest.raises(
        ValueError, match=r"Expected `array \| null`, got `object` - at `\$\.items`"
    ):
        decode_list(b'{"items": {}}')


def test_watch_events() -> None:
    event_type, raw = decode_event(json.dumps({"type": "MODIFIED", "object": OBJECT}))
    assert event_type == "MODIFIED"
    assert ObjectDecoder(_Shape).decode_object(raw)["metadata"]["resourceVersion"] == "42"
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    event_type, raw = decode_event(json.dumps({"type": "ERROR", "object": status}).encode())
    assert (event_type, msgspec.json.decode(raw)) == ("ERROR", status)
    with pytest.raises(msgspec.ValidationError, match="missing required field `object`"):
        decode_event(b'{"type": "ADDED"}')
