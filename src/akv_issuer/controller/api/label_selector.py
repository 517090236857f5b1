"""Kubernetes label selectors (``metav1.LabelSelector``), evaluated against labels.

``spec.podCertificates.namespaceSelector`` is a LabelSelector: ``matchLabels``
and ``matchExpressions``, every part ANDed, an empty selector matching every
set of labels. No dependency of ours evaluates one (lightkube's
``lightkube.operators`` only writes selector strings for the API server to
evaluate, and we read a single Namespace by name), so this module holds the
small pure function, with the semantics of apimachinery's ``labels.Selector``:

- ``In``: the label is present and its value is one of ``values``;
- ``NotIn``: the label is absent, or its value is none of ``values``;
- ``Exists`` / ``DoesNotExist``: the label is present / absent.

Validation (In and NotIn need values, Exists and DoesNotExist take none) is
the spec parser's, which names the field; here a requirement is taken as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

IN: Final = "In"
NOT_IN: Final = "NotIn"
EXISTS: Final = "Exists"
DOES_NOT_EXIST: Final = "DoesNotExist"
OPERATORS: Final = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST)
# The operators whose requirement names values (the others take none).
OPERATORS_WITH_VALUES: Final = (IN, NOT_IN)


@dataclass(frozen=True)
class LabelRequirement:
    """One entry of ``matchExpressions``: ``key``, an operator of
    :data:`OPERATORS`, and ``values`` (non-empty for In/NotIn, empty else)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == IN:
            return present and labels[self.key] in self.values
        if self.operator == NOT_IN:
            return not present or labels[self.key] not in self.values
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        raise ValueError(f"unknown label selector operator {self.operator!r}")

    def __str__(self) -> str:
        """As ``kubectl get -l`` writes it: ``key in (a,b)``, ``key notin (a)``,
        ``key``, ``!key``."""
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return f"!{self.key}"
        word = "in" if self.operator == IN else "notin"
        return f"{self.key} {word} ({','.join(self.values)})"


def selector_matches(
    labels: Mapping[str, str],
    match_labels: tuple[tuple[str, str], ...],
    match_expressions: tuple[LabelRequirement, ...] = (),
) -> bool:
    """Whether ``labels`` satisfy every ``matchLabels`` pair and every
    requirement (an empty selector matches everything)."""
    return all(key in labels and labels[key] == value for key, value in match_labels) and all(
        requirement.matches(labels) for requirement in match_expressions
    )


def describe_selector(
    match_labels: tuple[tuple[str, str], ...],
    match_expressions: tuple[LabelRequirement, ...] = (),
) -> str:
    """The selector for a message, by part, requirements as ``kubectl get -l``
    writes them: ``matchLabels a=b, c=d; matchExpressions e notin (x), !f``."""
    parts = []
    if match_labels:
        parts.append("matchLabels " + ", ".join(f"{k}={v}" for k, v in match_labels))
    if match_expressions:
        parts.append("matchExpressions " + ", ".join(str(r) for r in match_expressions))
    return "; ".join(parts) or "empty: every namespace"


__all__ = [
    "DOES_NOT_EXIST",
    "EXISTS",
    "IN",
    "NOT_IN",
    "OPERATORS",
    "OPERATORS_WITH_VALUES",
    "LabelRequirement",
    "describe_selector",
    "selector_matches",
]
