"""Field paths, field ownership and the patch formats of the fake API server.

A *field path* is a tuple of steps: a ``str`` is a key of a JSON object, an
:class:`Item` is the entry of a keyed list (``x-kubernetes-list-type: map``,
e.g. ``status.conditions`` keyed by ``type``). Other lists are atomic: the
list is one value. A :class:`Manager` owns a set of paths, as in the
``managedFields`` the real API server keeps (rendered as ``FieldsV1``).

Implemented as far as the controller relies on them:

- server-side apply (:func:`apply`): the applied configuration is merged
  into the object; fields another manager owns with a different value are
  conflicts unless forced (then ownership moves); fields the manager applied
  before and no longer applies are removed unless someone else owns them;
  keyed lists merge item by item, so two managers can each own conditions of
  their own type;
- JSON merge patch (RFC 7386), strategic merge patch for keyed lists (no
  ``$patch``/``$retainKeys`` directives), JSON patch (RFC 6902);
- updates (create, PUT, the patches): the fields a write changed move to its
  manager (operation ``Update``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
ListMaps = Mapping[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class Item:
    """The entry of a keyed list whose key fields have these values."""

    key: tuple[tuple[str, Any], ...]

    def render(self) -> str:
        return "k:" + json.dumps(dict(self.key), separators=(",", ":"), sort_keys=True)

    def matches(self, entry: Any) -> bool:
        return isinstance(entry, dict) and all(entry.get(k) == v for k, v in self.key)


Step = str | Item
Path = tuple[Step, ...]

# Never owned by anyone (the server sets them or they name the object).
_UNOWNED: frozenset[Path] = frozenset(
    {
        ("apiVersion",),
        ("kind",),
        ("metadata", "name"),
        ("metadata", "namespace"),
        ("metadata", "uid"),
        ("metadata", "resourceVersion"),
        ("metadata", "generation"),
        ("metadata", "creationTimestamp"),
        ("metadata", "deletionTimestamp"),
        ("metadata", "deletionGracePeriodSeconds"),
        ("metadata", "managedFields"),
        ("metadata", "selfLink"),
    }
)


# Maps with keys of the user's choosing: a manager whose update creates one
# owns the map itself too (``f:data: {.: {}, f:key: {}}``), as on the real
# server; an applier owns only the keys it applies.
MAPS: frozenset[tuple[str, ...]] = frozenset(
    {("data",), ("binaryData",), ("metadata", "labels"), ("metadata", "annotations")}
)


class PatchError(ValueError):
    """A patch that cannot be applied (422 Invalid or 400 BadRequest)."""


# -- paths -----------------------------------------------------------------------


def _names(path: Path) -> tuple[str, ...]:
    return tuple(step for step in path if isinstance(step, str))


def _item_of(entry: Any, keys: tuple[str, ...]) -> Item | None:
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        return None
    return Item(tuple((k, entry[k]) for k in keys))


def paths(obj: Any, list_maps: ListMaps, prefix: Path = ()) -> set[Path]:
    """Every owned path of ``obj``: leaves, empty objects, atomic lists and
    keyed-list entries (the entry itself and its fields)."""
    found: set[Path] = set()
    if isinstance(obj, dict):
        if not obj and prefix:
            found.add(prefix)
        for name, value in obj.items():
            path = (*prefix, name)
            if path in _UNOWNED:
                continue
            found |= paths(value, list_maps, path)
        return found
    keys = list_maps.get(_names(prefix)) if isinstance(obj, list) else None
    if keys and isinstance(obj, list):
        for entry in obj:
            item = _item_of(entry, keys)
            if item is None:
                raise PatchError(f"{dotted(prefix)}: an entry lacks its key field(s) {keys}")
            found.add((*prefix, item))
            found |= paths(entry, list_maps, (*prefix, item))
        return found
    if prefix:
        found.add(prefix)
    return found


_MISSING = object()


def value_at(obj: Any, path: Path) -> Any:
    """The value at ``path``, or the module's missing marker."""
    current = obj
    for step in path:
        if isinstance(step, Item):
            if not isinstance(current, list):
                return _MISSING
            current = next((e for e in current if step.matches(e)), _MISSING)
        elif isinstance(current, dict) and step in current:
            current = current[step]
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def has(obj: Any, path: Path) -> bool:
    return value_at(obj, path) is not _MISSING


def remove_at(obj: Any, path: Path) -> None:
    """Remove the field or keyed-list entry at ``path`` (nothing if absent)."""
    parent = value_at(obj, path[:-1]) if len(path) > 1 else obj
    last = path[-1]
    if isinstance(last, Item) and isinstance(parent, list):
        parent[:] = [e for e in parent if not last.matches(e)]
    elif isinstance(last, str) and isinstance(parent, dict):
        parent.pop(last, None)


def dotted(path: Path) -> str:
    """A path as the API server writes it in conflict messages (``.data.key``)."""
    text = ""
    for step in path:
        if isinstance(step, Item):
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in step.key) + "]"
        else:
            text += "." + step
    return text


def _is_node(path: Path) -> bool:
    """Whether ``path`` names a keyed-list entry or a map (owned as ``.``)."""
    return isinstance(path[-1], Item) or path in MAPS


def render(owned: Iterable[Path]) -> Obj:
    """``FieldsV1`` of a set of paths (``f:name`` / ``k:{...}`` / ``.``)."""
    tree: Obj = {}
    for path in sorted(owned, key=lambda p: [str(s) for s in p]):
        node = tree
        for step in path:
            node = node.setdefault(step.render() if isinstance(step, Item) else f"f:{step}", {})
        if _is_node(path):
            node["."] = {}
    return tree


# -- managers -----------------------------------------------------------------------


@dataclass
class Manager:
    manager: str
    operation: str  # "Apply" or "Update"
    subresource: str  # "" for the main resource
    api_version: str
    time: str
    owned: set[Path] = field(default_factory=set)

    def entry(self) -> Obj:
        entry: Obj = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": render(self.owned),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _find(managers: list[Manager], name: str, operation: str, sub: str) -> Manager | None:
    for m in managers:
        if (m.manager, m.operation, m.subresource) == (name, operation, sub):
            return m
    return None


def _under(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix


def _filled_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def record_update(
    managers: list[Manager],
    old: Obj | None,
    new: Obj,
    list_maps: ListMaps,
    *,
    manager: str,
    subresource: str,
    api_version: str,
    time: str,
) -> None:
    """Give ``manager`` (operation Update) the fields that differ between
    ``old`` and ``new``; fields that are gone belong to nobody any more."""
    before = paths(old, list_maps) if old is not None else set()
    after = paths(new, list_maps)
    changed = {p for p in after if p not in before or value_at(old, p) != value_at(new, p)}
    # A map this write created is the writer's too.
    maps_before = {p for p in MAPS if old is not None and _filled_map(value_at(old, p))}
    maps_after = {p for p in MAPS if _filled_map(value_at(new, p))}
    changed |= maps_after - maps_before
    gone = (before - after) | (maps_before - maps_after)
    for m in managers:
        m.owned -= changed | gone
    if changed:
        mine = _find(managers, manager, "Update", subresource)
        if mine is None:
            mine = Manager(manager, "Update", subresource, api_version, time)
            managers.append(mine)
        mine.owned |= changed
        mine.time = time
    managers[:] = [m for m in managers if m.owned]


@dataclass
class Conflict:
    path: Path
    manager: str
    operation: str
    subresource: str
    api_version: str
    time: str


def apply(
    managers: list[Manager],
    live: Obj,
    config: Obj,
    list_maps: ListMaps,
    *,
    manager: str,
    subresource: str,
    api_version: str,
    time: str,
    force: bool,
) -> tuple[Obj, list[Conflict]]:
    """Server-side apply of ``config`` onto ``live``; returns the new object
    and the conflicts (when not empty and not forced nothing is changed)."""
    applied = paths(config, list_maps)
    others = [m for m in managers if m.manager != manager]
    conflicts: list[Conflict] = []
    for path in sorted(applied, key=lambda p: [str(s) for s in p]):
        if isinstance(path[-1], Item):
            continue  # an entry itself never conflicts; its fields may
        theirs = value_at(live, path)
        if theirs is _MISSING or theirs == value_at(config, path):
            continue
        for m in others:
            if path in m.owned:
                conflicts.append(
                    Conflict(path, m.manager, m.operation, m.subresource, m.api_version, m.time)
                )
    if conflicts and not force:
        return live, conflicts
    for c in conflicts:
        for m in others:
            if m.manager == c.manager:
                m.owned.discard(c.path)
    result = copy.deepcopy(live)
    mine = _find(managers, manager, "Apply", subresource)
    before = mine.owned if mine is not None else set()
    # Fields this manager applied before and no longer applies go, unless
    # another manager (or this one in another operation) still owns them.
    still_owned: set[Path] = set().union(*(m.owned for m in managers if m is not mine))
    removed: list[Path] = []
    for path in sorted(before - applied, key=len):
        if any(_under(p, path) for p in still_owned | applied):
            continue
        if any(_under(path, r) for r in removed):
            continue  # its parent went already
        if len(path) > 1 and isinstance(path[-2], Item) and path[-1] in dict(path[-2].key):
            continue  # the key of an entry that stays
        remove_at(result, path)
        removed.append(path)
    merge_keyed(result, config, list_maps)
    if mine is None:
        mine = Manager(manager, "Apply", subresource, api_version, time)
        managers.append(mine)
    mine.owned = applied
    mine.time = time
    managers[:] = [m for m in managers if m.owned]
    return result, conflicts


# -- merging -----------------------------------------------------------------------


def merge_keyed(target: Obj, patch: Obj, list_maps: ListMaps, prefix: tuple[str, ...] = ()) -> None:
    """Merge ``patch`` into ``target`` in place: objects recursively, keyed
    lists entry by entry, anything else replaced."""
    for name, value in patch.items():
        here = (*prefix, name)
        current = target.get(name)
        keys = list_maps.get(here)
        if isinstance(value, dict) and isinstance(current, dict):
            merge_keyed(current, value, list_maps, here)
        elif keys and isinstance(value, list) and isinstance(current, list):
            for entry in value:
                item = _item_of(entry, keys)
                if item is None:
                    raise PatchError(f"{'.'.join(here)}: an entry lacks its key field(s) {keys}")
                existing = next((e for e in current if item.matches(e)), None)
                if existing is None:
                    current.append(copy.deepcopy(entry))
                else:
                    merge_keyed(existing, entry, list_maps, here)
        else:
            target[name] = copy.deepcopy(value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null removes)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def strategic_merge_patch(
    target: Any, patch: Any, list_maps: ListMaps, prefix: tuple[str, ...] = ()
) -> Any:
    """Strategic merge patch: a merge patch whose keyed lists merge by key."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        here = (*prefix, name)
        keys = list_maps.get(here)
        if value is None:
            result.pop(name, None)
        elif keys and isinstance(value, list) and isinstance(result.get(name), list):
            merged = result[name]
            for entry in value:
                item = _item_of(entry, keys)
                if item is None:
                    raise PatchError(f"{'.'.join(here)}: an entry lacks its key field(s) {keys}")
                index = next((i for i, e in enumerate(merged) if item.matches(e)), None)
                if index is None:
                    merged.append(copy.deepcopy(entry))
                else:
                    merged[index] = strategic_merge_patch(merged[index], entry, list_maps, here)
        else:
            result[name] = strategic_merge_patch(result.get(name), value, list_maps, here)
    return result


def _pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            doc = doc[part]
        else:
            raise KeyError(part)
    return doc


def json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        try:
            kind = op["op"]
            parts = _pointer(op["path"])
            if kind in ("move", "copy"):
                source = _pointer(op["from"])
                value = copy.deepcopy(_walk(doc, source))
                if kind == "move":
                    _remove(doc, source)
                _add(doc, parts, value)
            elif kind == "add":
                _add(doc, parts, copy.deepcopy(op["value"]))
            elif kind == "remove":
                _remove(doc, parts)
            elif kind == "replace":
                _walk(doc, parts)  # must exist
                _remove(doc, parts)
                _add(doc, parts, copy.deepcopy(op["value"]))
            elif kind == "test":
                if _walk(doc, parts) != op["value"]:
                    raise PatchError(f"test failed at {op['path']}")
            else:
                raise PatchError(f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            if isinstance(exc, PatchError):
                raise
            raise PatchError(f"cannot apply {op!r}: {exc}") from None
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> None:
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value


def _remove(doc: Any, parts: list[str]) -> None:
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
