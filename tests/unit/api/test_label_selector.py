"""Label selectors evaluated as Kubernetes evaluates them (apimachinery's
labels.Selector): matchLabels and matchExpressions ANDed, an empty selector
matching everything."""

from __future__ import annotations

import pytest

from akv_issuer.controller.api.label_selector import (
    LabelRequirement,
    describe_selector,
    selector_matches,
)

PROD = {"tier": "prod", "team": "a"}
SANDBOX = {"tier": "sandbox", "team": "a"}
UNLABELLED: dict[str, str] = {}


@pytest.mark.parametrize(
    ("requirement", "prod", "sandbox", "unlabelled"),
    [
        (LabelRequirement("tier", "In", ("prod", "staging")), True, False, False),
        # NotIn matches a namespace without the label, as in Kubernetes.
        (LabelRequirement("tier", "NotIn", ("sandbox",)), True, False, True),
        (LabelRequirement("tier", "Exists"), True, True, False),
        (LabelRequirement("tier", "DoesNotExist"), False, False, True),
        # matchLabels' sibling: one value of one label.
        (LabelRequirement("team", "In", ("a",)), True, True, False),
    ],
)
def test_each_operator_matches_as_kubernetes_does(
    requirement: LabelRequirement, prod: bool, sandbox: bool, unlabelled: bool
) -> None:
    assert selector_matches(PROD, (), (requirement,)) is prod
    assert selector_matches(SANDBOX, (), (requirement,)) is sandbox
    assert selector_matches(UNLABELLED, (), (requirement,)) is unlabelled


def test_an_empty_value_is_a_value_and_exists() -> None:
    labels = {"flag": ""}
    assert selector_matches(labels, (("flag", ""),))
    assert selector_matches(labels, (), (LabelRequirement("flag", "Exists"),))
    assert selector_matches(labels, (), (LabelRequirement("flag", "In", ("",)),))
    assert not selector_matches(UNLABELLED, (("flag", ""),))


def test_match_labels_and_expressions_are_anded() -> None:
    match_labels = (("team", "a"),)
    not_sandbox = (LabelRequirement("tier", "NotIn", ("sandbox",)),)
    assert selector_matches(PROD, match_labels, not_sandbox)
    assert not selector_matches(SANDBOX, match_labels, not_sandbox)  # the expression fails
    assert not selector_matches({"tier": "prod", "team": "b"}, match_labels, not_sandbox)
    both = (LabelRequirement("tier", "Exists"), LabelRequirement("team", "In", ("b",)))
    assert not selector_matches(PROD, (), both)  # one requirement of two fails


def test_an_empty_selector_matches_everything() -> None:
    assert selector_matches(PROD, ())
    assert selector_matches(UNLABELLED, (), ())


def test_an_unknown_operator_is_an_error_not_a_match() -> None:
    with pytest.raises(ValueError, match="unknown label selector operator 'Equals'"):
        selector_matches(PROD, (), (LabelRequirement("tier", "Equals", ("prod",)),))


def test_the_description_is_what_kubectl_writes() -> None:
    assert describe_selector(()) == "empty: every namespace"
    assert describe_selector((("a", "b"), ("c", "d"))) == "matchLabels a=b, c=d"
    assert describe_selector(
        (("a", "b"),),
        (
            LabelRequirement("tier", "In", ("x", "y")),
            LabelRequirement("tier", "NotIn", ("z",)),
            LabelRequirement("e", "Exists"),
            LabelRequirement("f", "DoesNotExist"),
        ),
    ) == ("matchLabels a=b; matchExpressions tier in (x,y), tier notin (z), e, !f")
