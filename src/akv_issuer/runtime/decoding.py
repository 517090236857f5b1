"""List pages and watch events decoded into only the fields a handler reads.

Why: a controller lists every object of its kinds at start-up, and most of
them it looks at once and forgets. 100,000 finished CertificateRequests are
~500 MB of JSON (the CSR, the certificate, the CA, managedFields); decoding
each into a whole dict (lightkube's generic path, ~20 us per object) only to
read its issuerRef and conditions was most of the controller's start-up CPU.
A *shape* (a ``TypedDict`` tree naming the fields a handler reads, given by
the caller: this layer knows nothing of any resource) is decoded by msgspec,
which skips everything else without building it (a few us per object).

Each object of a shaped decode is a :class:`Partial`: a plain dict holding the
shape's fields, which can still decode the whole object from the response's
bytes (:meth:`Partial.whole`) for the few a handler keeps, as long as the
handler call lasts (after it the bytes are released: holding them would keep
a whole page alive).

An object that does not fit its shape (a field of another type than the shape
says) is not dropped and does not stop the list: it is decoded whole, as
without a shape, and the readers' own leniency applies; ``decode_object``
names the field (``Expected `object`, got `array` - at `$.metadata```).

A shape must include ``metadata.name``, ``metadata.namespace`` and
``metadata.resourceVersion``: the informer keys objects by the first two and
resumes its watch from the third.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

Obj = dict[str, Any]


class Partial(dict[str, Any]):
    """The fields of one object its shape asked for; :meth:`whole` decodes all of it."""

    __slots__ = ("_raw",)

    def __init__(self, fields: Obj, raw: bytes | msgspec.Raw | None) -> None:
        super().__init__(fields)
        self._raw = raw

    def whole(self) -> Obj:
        """The whole object, decoded from the response; only while the handler call lasts."""
        if self._raw is None:
            raise RuntimeError("the whole object is only available during the handler call")
        decoded: Obj = msgspec.json.decode(self._raw)
        return decoded

    def release(self) -> None:
        self._raw = None


def whole(obj: Obj) -> Obj:
    """``obj`` itself, or, for a :class:`Partial`, the whole object it was read from."""
    return obj.whole() if isinstance(obj, Partial) else obj


class ObjectDecoder:
    """Decodes objects into ``shape`` (a TypedDict), or whole when ``shape`` is None."""

    def __init__(self, shape: type | None = None) -> None:
        self.shape = shape
        self._narrow: msgspec.json.Decoder[Any] | None = (
            msgspec.json.Decoder(shape) if shape is not None else None
        )
        self._whole: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

    def decode_object(self, raw: bytes | msgspec.Raw) -> Obj:
        """The shape's fields of one object (:class:`Partial`), or the whole
        object without a shape. ``msgspec.ValidationError`` (a ``ValueError``)
        names a field of another type; ``msgspec.DecodeError`` invalid JSON."""
        if self._narrow is None:
            return self._object(self._whole.decode(raw))
        return Partial(self._object(self._narrow.decode(raw)), raw)

    def decode_lenient(self, raw: bytes | msgspec.Raw) -> tuple[Obj, str | None]:
        """Like :meth:`decode_object`, but an object that does not fit the shape
        is decoded whole; the second value then says why."""
        try:
            return self.decode_object(raw), None
        except msgspec.ValidationError as err:
            return self._object(self._whole.decode(raw)), str(err)

    @staticmethod
    def _object(value: Any) -> Obj:
        if not isinstance(value, dict):
            raise msgspec.ValidationError(f"Expected `object`, got `{type(value).__name__}`")
        return value


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str = msgspec.field(name="continue", default="")


class _RawList(msgspec.Struct):
    items: list[msgspec.Raw] | None = None
    metadata: _ListMeta | None = None


class _RawEvent(msgspec.Struct):
    type: str
    object: msgspec.Raw


@dataclass(frozen=True, slots=True)
class ListPage:
    items: list[msgspec.Raw]  # each object's bytes, decoded one by one by the caller
    resource_version: str
    continue_token: str  # empty on the last page


def decode_list(body: bytes) -> ListPage:
    """One page of a list response: its objects' bytes, its resourceVersion and
    continue token. ``ValueError`` (msgspec's) when it is not a list."""
    page = msgspec.json.decode(body, type=_RawList)
    meta = page.metadata or _ListMeta()
    return ListPage(page.items or [], meta.resourceVersion, meta.continue_)


def decode_event(line: bytes | str) -> tuple[str, msgspec.Raw]:
    """One watch event: its type and its object's bytes."""
    event = msgspec.json.decode(line, type=_RawEvent)
    return event.type, event.object
