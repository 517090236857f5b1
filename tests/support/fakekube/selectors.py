"""Label and field selectors as the API server parses them (the common subset)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")

FIELDS = {"metadata.name": ("name",), "metadata.namespace": ("namespace",)}


class SelectorError(ValueError):
    """A selector the API server rejects (400 BadRequest)."""


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return parts


def label_selector(text: str | None) -> Predicate:
    if not text:
        return lambda obj: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split(text):
        eq = _EQ.match(term)
        if eq:
            key, op, value = eq.groups()
            if op == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        found = _SET.match(term)
        if not found:
            raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
        negated, key, op, values = found.groups()
        if op:
            if negated:
                raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
            allowed = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, a=allowed: labels.get(k) in a)
            else:
                checks.append(lambda labels, k=key, a=allowed: labels.get(k) not in a)
        elif negated:
            checks.append(lambda labels, k=key: k not in labels)
        else:
            checks.append(lambda labels, k=key: k in labels)

    def match(obj: Obj) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return match


def field_selector(text: str | None) -> Predicate:
    """``metadata.name`` and ``metadata.namespace`` with =, == and != (what
    every resource supports); other fields are a 400 as for most resources."""
    if not text:
        return lambda obj: True
    checks: list[Callable[[Obj], bool]] = []
    for term in _split(text):
        eq = _EQ.match(term)
        if not eq:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {term.strip()!r}")
        name, op, value = eq.groups()
        if name not in FIELDS:
            raise SelectorError(f"field label not supported: {name}")
        (attr,) = FIELDS[name]

        def check(obj: Obj, a: str = attr, v: str = value, neg: bool = op == "!=") -> bool:
            actual = str((obj.get("metadata") or {}).get(a) or "")
            return (actual != v) if neg else (actual == v)

        checks.append(check)
    return lambda obj: all(check(obj) for check in checks)
