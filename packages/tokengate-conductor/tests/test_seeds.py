"""Lead seeds (SPEC §4 layer 5) under every digest policy, including a plugin's."""

from __future__ import annotations

import hashlib
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokengate.conductor import compute_seed, conductor_snapshot, get_active_seed
from tokengate.core import (
    DigestPolicy,
    DigestPolicyRegistry,
    OperationsCoordinator,
    PluginError,
    TagValidationError,
    hookimpl,
    plugin_manager,
    task_token_guard,
)
from tokengate.hashing import digest

WAIT = 20.0
LENGTHS = {
    DigestPolicy.FULL: 64,
    DigestPolicy.SHORT: 16,
    DigestPolicy.FAST: 16,
    DigestPolicy.MINIMAL: 8,
}


@pytest.mark.parametrize("policy", list(DigestPolicy))
def test_compute_seed_lengths_and_definition(policy: DigestPolicy) -> None:
    seed = compute_seed("op#1", ["load", "save"], policy)
    assert len(seed) == LENGTHS[policy]
    assert set(seed) <= set(string.hexdigits.lower())
    assert seed == digest("op#1\x1fload\x1fsave", policy)
    assert compute_seed("op#1", ("load", "save"), policy.value.upper()) == seed


def test_the_fast_policy_is_blake2s_with_an_8_byte_digest() -> None:
    payload = b"lead#7\x1fx"
    assert (
        compute_seed("lead#7", ["x"], "fast") == hashlib.blake2s(payload, digest_size=8).hexdigest()
    )
    assert compute_seed("lead#7", ["x"], "full") == hashlib.sha256(payload).hexdigest()


@given(
    ids=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=2, unique=True),
    calls=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
)
def test_seeds_are_deterministic_and_depend_on_the_token_id(
    ids: list[str], calls: list[str]
) -> None:
    first, second = ids
    assert compute_seed(first, calls) == compute_seed(first, list(calls))
    assert compute_seed(first, calls) != compute_seed(second, calls)


def test_compute_seed_rejects_unknown_policies() -> None:
    with pytest.raises(KeyError, match="not a registered digest policy"):
        compute_seed("op#1", ["x"], "sha1")


def _lead_ops() -> dict[DigestPolicy, Any]:
    ops: dict[DigestPolicy, Any] = {}
    for policy in DigestPolicy:

        def body() -> str | None:
            return get_active_seed()

        ops[policy] = task_token_guard(
            f"seed_lead_{policy.value}",
            tags={"external_calls": ["a", "b"], "digest_policy": policy},
        )(body)
    return ops


@pytest.mark.parametrize("round_", range(3))
def test_lead_seeds_follow_their_digest_policy(round_: int) -> None:
    ops = _lead_ops()
    with OperationsCoordinator(cores=3, workers_per_core=2) as coordinator:
        tokens = [(policy, ops[policy]()) for _ in range(10) for policy in DigestPolicy]
        for policy, token in tokens:
            seed = token.get(WAIT)
            assert seed == token.conductor_seed == token.tags["conductor_seed"]
            assert len(seed) == LENGTHS[policy]
            assert seed == compute_seed(token.token_id, ["a", "b"], policy)
        full = [token.conductor_seed for policy, token in tokens if policy is DigestPolicy.FULL]
        assert len(set(full)) == len(full)
        assert dict(conductor_snapshot(coordinator)) == {}


class PluginDigest:
    """A third-party digest policy: a prefix and six hex characters of MD5."""

    @hookimpl
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        registry.register("Plugin_MD5", lambda data: "p" + hashlib.md5(data).hexdigest()[:6])


def _numeric_digest(data: bytes) -> Any:
    return 42  # a broken plugin: digests must be strings


class NotAString:
    @hookimpl
    def tokengate_register_digest_policies(self, registry: DigestPolicyRegistry) -> None:
        registry.register("numeric", _numeric_digest)


def test_a_plugin_registered_digest_policy_is_selectable_by_name() -> None:
    host = plugin_manager()
    host.register(PluginDigest(), name="test-plugin-digest")
    try:

        @task_token_guard(tags={"external_calls": ["x"], "digest_policy": "PLUGIN_md5"})
        def plugin_lead() -> str | None:
            return get_active_seed()

        with OperationsCoordinator(cores=2, workers_per_core=2) as coordinator:
            tokens = [plugin_lead() for _ in range(5)]
            for token in tokens:
                seed = token.get(WAIT)
                payload = f"{token.token_id}\x1fx".encode()
                assert seed == "p" + hashlib.md5(payload).hexdigest()[:6]
                assert seed == compute_seed(token.token_id, ["x"], "plugin_md5")
            assert dict(conductor_snapshot(coordinator)) == {}
    finally:
        host.unregister(name="test-plugin-digest")
    with pytest.raises(TagValidationError, match="digest_policy"):
        task_token_guard(tags={"external_calls": ["x"], "digest_policy": "plugin_md5"})(len)
    with pytest.raises(KeyError):
        compute_seed("op#1", ["x"], "plugin_md5")


def test_a_digest_that_returns_no_string_fails_the_lead_with_a_plugin_error() -> None:
    host = plugin_manager()
    host.register(NotAString(), name="test-numeric-digest")
    try:

        @task_token_guard(tags={"external_calls": ["x"], "digest_policy": "numeric"})
        def numeric_lead() -> None:
            raise AssertionError("never runs")

        with pytest.raises(PluginError, match="non-empty string"):
            compute_seed("op#1", ["x"], "numeric")
        with OperationsCoordinator(cores=2, workers_per_core=1) as coordinator:
            token = numeric_lead()
            with pytest.raises(PluginError, match="'numeric' returned 42"):
                token.get(WAIT)
            assert token.conductor_seed is None
            assert dict(conductor_snapshot(coordinator)) == {}
    finally:
        host.unregister(name="test-numeric-digest")
