"""The conductor's tags: ``external_calls``, ``digest_policy`` and the sticky-anchor rule."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokengate.core import DigestPolicy, TagValidationError, plugin_manager, task_token_guard


def _decorate(tags: dict[str, Any]) -> Any:
    def body() -> None:
        return None

    return task_token_guard("tag_probe", tags=tags)(body)


def test_external_calls_accepts_lists_and_tuples_and_freezes_them() -> None:
    probe = _decorate({"external_calls": ["load", " save "]})
    plan = probe.__tokengate_plan__
    assert plan.public_tags["external_calls"] == ("load", "save")
    assert plan.tags["digest_policy"] == "full"
    probe = _decorate({"external_calls": ("one",)})
    assert probe.__tokengate_plan__.public_tags["external_calls"] == ("one",)


@pytest.mark.parametrize(
    "policy",
    ["full", "SHORT", "Fast", " minimal ", *DigestPolicy],
)
def test_digest_policy_accepts_names_in_any_case_and_enum_members(policy: object) -> None:
    probe = _decorate({"external_calls": ["x"], "digest_policy": policy})
    expected = str(getattr(policy, "value", policy)).strip().lower()
    assert probe.__tokengate_plan__.public_tags["digest_policy"] == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([], "at least one operation"),
        ((), "at least one operation"),
        ("load", "not str"),
        (b"load", "not bytes"),
        ({"load"}, "not set"),
        (None, "not NoneType"),
        (["load", ""], "item 1 is an empty operation name"),
        (["   "], "item 0 is an empty operation name"),
        (["load", 3], "item 1 is int"),
    ],
)
def test_bad_external_calls_fail_at_decoration(value: object, fragment: str) -> None:
    with pytest.raises(TagValidationError) as caught:
        _decorate({"external_calls": value})
    message = str(caught.value)
    assert "'external_calls'" in message
    assert "_decorate.<locals>.body" in message  # names the function
    assert fragment in message


@pytest.mark.parametrize("value", ["sha1", "", 3, None, ["full"]])
def test_bad_digest_policy_fails_at_decoration_listing_the_allowed_names(value: object) -> None:
    with pytest.raises(TagValidationError) as caught:
        _decorate({"external_calls": ["x"], "digest_policy": value})
    message = str(caught.value)
    assert "'digest_policy'" in message
    for name in ("fast", "full", "minimal", "short"):
        assert name in message


def test_sticky_anchor_with_external_calls_is_an_error() -> None:
    with pytest.raises(TagValidationError) as caught:
        _decorate({"external_calls": ["x"], "sticky_anchor": "anchor"})
    message = str(caught.value)
    assert "sticky_anchor" in message
    assert "external_calls" in message
    assert "tokengate-conductor" in message
    # each on its own is fine
    _decorate({"sticky_anchor": "anchor"})
    _decorate({"external_calls": ["x"]})


def test_the_tags_are_owned_by_the_conductor() -> None:
    specs = plugin_manager().state().tags.specs
    assert specs["external_calls"].owner == "tokengate-conductor"
    assert specs["digest_policy"].owner == "tokengate-conductor"
    assert specs["digest_policy"].default == "full"


_names = st.text(min_size=1, max_size=12).filter(lambda name: name.strip() != "")


@given(calls=st.lists(_names, min_size=1, max_size=6), as_tuple=st.booleans())
def test_any_non_empty_list_of_names_is_a_valid_call_list(calls: list[str], as_tuple: bool) -> None:
    value: object = tuple(calls) if as_tuple else calls
    probe = _decorate({"external_calls": value})
    assert probe.__tokengate_plan__.public_tags["external_calls"] == tuple(
        name.strip() for name in calls
    )


@given(name=st.text(max_size=10))
def test_unregistered_digest_policy_names_are_rejected(name: str) -> None:
    registered = plugin_manager().state().digest_policies
    if name in registered:
        _decorate({"external_calls": ["x"], "digest_policy": name})
        return
    with pytest.raises(TagValidationError):
        _decorate({"external_calls": ["x"], "digest_policy": name})
