"""Tag validation at decoration: the frozen model, the errors and their suggestions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tokengate.core import (
    HashPolicy,
    StorageSpeed,
    TagValidationError,
    Weight,
    plugin_manager,
    task_token_guard,
)
from tokengate.core._guard import get_operation_plan
from tokengate.core._plan import OperationPlan

CORE_TAGS = (
    "weight",
    "sticky_anchor",
    "hash_policy",
    "executor",
    "process_pool",
    "storage_speed",
    "timeout",
)


def target(x: int = 0) -> int:
    """The function every tag test decorates (its qualname must appear in errors)."""
    return x


WHERE = f"{target.__module__}.{target.__qualname__}"


def decorate(tags: Mapping[str, object] | None) -> OperationPlan:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "storage_speed with process_pool", UserWarning)
        decorated = task_token_guard(tags=tags)(target)
    plan = get_operation_plan(decorated)
    assert plan is not None
    return plan


def known_tags() -> list[str]:
    return sorted(plugin_manager().state().tags.specs)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class _HugeRepr:
    def __repr__(self) -> str:
        return "x" * 100_000


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["heavy", "LIGHT", "Medium", "slow", "FAST", "none", "standard", "x"]),
    st.sampled_from([*Weight, *StorageSpeed, *HashPolicy]),
    st.lists(st.text(max_size=5), max_size=3),
    st.builds(_BadRepr),
    st.builds(_HugeRepr),
    st.builds(object),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_keys = st.one_of(st.sampled_from(CORE_TAGS), st.text(min_size=0, max_size=15))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=4))
def test_any_tags_pass_or_fail_with_a_tag_validation_error(tags: dict[str, object]) -> None:
    try:
        plan = decorate(tags)
    except TagValidationError as exc:
        message = str(exc)
        assert WHERE in message, message
        assert any(repr(key) in message for key in tags), message
        assert len(message) < 2_000, "the error message must stay readable"
    else:
        assert set(plan.public_tags) == set(tags)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([*Weight]),
    st.sampled_from(["lower", "upper", "title", "member", "padded"]),
)
def test_weight_accepts_members_and_strings_case_insensitively(weight: Weight, form: str) -> None:
    value: object = {
        "lower": weight.value.lower(),
        "upper": weight.value.upper(),
        "title": weight.value.title(),
        "member": weight,
        "padded": f"  {weight.value.upper()} ",
    }[form]
    plan = decorate({"weight": value})
    assert plan.weight is weight
    assert plan.public_tags["weight"] is weight


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([*StorageSpeed]), st.booleans())
def test_storage_speed_accepts_members_and_strings(speed: StorageSpeed, upper: bool) -> None:
    value = speed.value.upper() if upper else speed
    plan = decorate({"storage_speed": value})
    assert plan.storage is speed


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([*HashPolicy]), st.booleans())
def test_hash_policy_accepts_members_and_strings(policy: HashPolicy, upper: bool) -> None:
    value = policy.value.upper() if upper else policy
    plan = decorate({"hash_policy": value})
    assert plan.tags["hash_policy"] == policy.value
    assert (plan.key_fn is None) == (policy is HashPolicy.NONE)


def _misspellings(name: str) -> list[str]:
    swaps = [name[:i] + name[i + 1] + name[i] + name[i + 2 :] for i in range(len(name) - 1)]
    drops = [name[:i] + name[i + 1 :] for i in range(len(name))]
    doubles = [name[:i] + name[i] + name[i:] for i in range(len(name))]
    upper = [name[:i] + name[i].upper() + name[i + 1 :] for i in range(len(name))]
    return [m for m in swaps + drops + doubles + upper if m != name and m not in CORE_TAGS]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_misspelled_keys_get_a_did_you_mean(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(known_tags()))
    typo = data.draw(st.sampled_from(_misspellings(name)))
    assume(typo not in known_tags())
    with pytest.raises(TagValidationError) as info:
        decorate({typo: "anything"})
    message = str(info.value)
    assert f"did you mean {name!r}?" in message, message
    assert repr(typo) in message
    assert WHERE in message


def test_unknown_key_without_a_close_match_lists_the_known_tags() -> None:
    with pytest.raises(TagValidationError) as info:
        decorate({"zzqqxx": 1})
    message = str(info.value)
    assert "did you mean" not in message
    for name in CORE_TAGS:
        assert name in message


@pytest.mark.parametrize(
    ("tags", "tag", "allowed"),
    [
        ({"weight": "enormous"}, "weight", "heavy, medium, light"),
        ({"weight": 3}, "weight", "heavy, medium, light"),
        ({"storage_speed": "warp"}, "storage_speed", "slow, moderate, fast, insane"),
        ({"hash_policy": "bogus"}, "hash_policy", "standard"),
        ({"sticky_anchor": ""}, "sticky_anchor", "non-empty"),
        ({"sticky_anchor": 5}, "sticky_anchor", "non-empty"),
        ({"process_pool": "yes"}, "process_pool", "True or False"),
        ({"process_pool": 1}, "process_pool", "True or False"),
        ({"timeout": 0}, "timeout", "> 0"),
        ({"timeout": -1.5}, "timeout", "> 0"),
        ({"timeout": float("nan")}, "timeout", "> 0"),
        ({"timeout": float("inf")}, "timeout", "> 0"),
        ({"timeout": True}, "timeout", "> 0"),
        ({"timeout": "10s"}, "timeout", "> 0"),
    ],
)
def test_bad_values_name_the_function_the_tag_and_the_allowed_values(
    tags: dict[str, object], tag: str, allowed: str
) -> None:
    with pytest.raises(TagValidationError) as info:
        decorate(tags)
    message = str(info.value)
    assert WHERE in message
    assert repr(tag) in message
    assert allowed in message
    assert isinstance(info.value, ValueError)


def test_values_with_a_failing_repr_still_give_a_tag_validation_error() -> None:
    for tag in ("weight", "hash_policy", "timeout", "storage_speed", "sticky_anchor"):
        with pytest.raises(TagValidationError, match=tag):
            decorate({tag: _BadRepr()})


def test_valid_core_tags_are_normalised() -> None:
    plan = decorate(
        {
            "weight": "Heavy",
            "sticky_anchor": "images",
            "hash_policy": "FAST",
            "process_pool": False,
            "storage_speed": "moderate",
            "timeout": 2,
        }
    )
    assert plan.weight is Weight.HEAVY
    assert plan.anchor == "images"
    assert plan.tags["hash_policy"] == "fast"
    assert plan.storage is StorageSpeed.MODERATE
    assert plan.timeout == 2
    assert plan.process is False


def test_defaults_without_tags() -> None:
    plan = decorate(None)
    assert plan.weight is Weight.MEDIUM
    assert plan.anchor == plan.operation_type
    assert plan.tags["hash_policy"] == "standard"
    assert plan.tags["process_pool"] is False
    assert plan.timeout is None
    assert dict(plan.public_tags) == {}


@pytest.mark.parametrize(
    ("name", "weight"),
    [("resize_heavy", Weight.HEAVY), ("LightPing", Weight.LIGHT), ("plain", Weight.MEDIUM)],
)
def test_weight_defaults_from_the_operation_name(name: str, weight: Weight) -> None:
    decorated = task_token_guard(operation_type=name)(target)
    plan = get_operation_plan(decorated)
    assert plan is not None
    assert plan.weight is weight


def test_the_tag_model_is_frozen_and_forbids_unknown_keys() -> None:
    model = plugin_manager().state().tag_model
    assert model.model_config.get("frozen") is True
    assert model.model_config.get("extra") == "forbid"
    instance = model.model_validate({"weight": "light"})
    with pytest.raises(ValidationError):
        instance.weight = Weight.HEAVY  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        model.model_validate({"not_a_tag": 1})
    plan = decorate({"weight": "light"})
    with pytest.raises(TypeError):
        plan.tags["weight"] = Weight.HEAVY  # type: ignore[index]


@pytest.mark.parametrize("tags", [[("weight", "heavy")], "weight=heavy", 3])
def test_tags_must_be_a_mapping(tags: Any) -> None:
    with pytest.raises(TagValidationError, match="mapping"):
        decorate(tags)


def test_tag_names_must_be_strings() -> None:
    with pytest.raises(TagValidationError, match="strings"):
        decorate({1: "heavy"})  # type: ignore[dict-item]


def test_storage_speed_with_process_pool_is_a_user_warning() -> None:
    with pytest.warns(UserWarning, match="storage_speed") as record:
        task_token_guard(tags={"storage_speed": "fast", "process_pool": True})(target)
    assert len(record) == 1
    assert WHERE in str(record[0].message)


def test_sticky_anchor_with_external_calls_is_an_error() -> None:
    if "external_calls" not in known_tags():
        pytest.skip("the conductor plugin is not registered in this environment")
    with pytest.raises(TagValidationError) as info:
        decorate({"sticky_anchor": "a", "external_calls": ["child_op"]})
    message = str(info.value)
    assert WHERE in message
    assert "sticky_anchor" in message
    assert "external_calls" in message


def _run_isolated(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter without entry-point plugins; it prints JSON."""
    env = dict(os.environ, TOKENGATE_DISABLE_PLUGIN_AUTOLOAD="1")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_a_plugin_tag_without_its_plugin_names_the_distribution() -> None:
    result = _run_isolated(
        """
        import json
        from tokengate.core import TagValidationError, plugin_manager, task_token_guard

        def lead():
            return None

        out = {"plugins": [p.name for p in plugin_manager().plugins()]}
        for tags in ({"external_calls": ["child"]}, {"digest_policy": "short"}):
            try:
                task_token_guard(tags=tags)(lead)
            except TagValidationError as exc:
                out[next(iter(tags))] = str(exc)
            else:
                out[next(iter(tags))] = None
        print(json.dumps(out))
        """
    )
    assert result["plugins"] == ["tokengate.core.builtin"]
    for tag in ("external_calls", "digest_policy"):
        message = result[tag]
        assert message is not None, f"{tag} was accepted without its plugin"
        assert repr(tag) in message
        assert "tokengate-conductor" in message
        assert "pip install tokengate-conductor" in message
        assert "lead" in message
