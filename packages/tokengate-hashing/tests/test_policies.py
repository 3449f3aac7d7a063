"""Hash and digest policies."""

from __future__ import annotations

import hashlib

import pytest

from tokengate.hashing import DigestPolicy, HashPolicy, digest, digest_function


def test_known_vectors() -> None:
    assert digest(b"abc") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert digest(b"abc", DigestPolicy.SHORT) == "ba7816bf8f01cfea"
    assert digest(b"abc", DigestPolicy.MINIMAL) == "ba7816bf"
    assert digest(b"abc", DigestPolicy.FAST) == hashlib.blake2s(b"abc", digest_size=8).hexdigest()


@pytest.mark.parametrize(
    ("policy", "length"),
    [
        (DigestPolicy.FULL, 64),
        (DigestPolicy.SHORT, 16),
        (DigestPolicy.FAST, 16),
        (DigestPolicy.MINIMAL, 8),
    ],
)
def test_lengths_and_str_input(policy: DigestPolicy, length: int) -> None:
    text = digest("héllo", policy)
    assert len(text) == length
    assert text == digest("héllo".encode(), policy)
    assert text == digest_function(policy)("héllo".encode())
    assert digest("héllo", policy.value.upper()) == text


def test_digest_rejects_other_data() -> None:
    with pytest.raises(TypeError, match="bytes or str"):
        digest(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("enum_type", [HashPolicy, DigestPolicy])
def test_parse_is_case_insensitive(enum_type: type[HashPolicy] | type[DigestPolicy]) -> None:
    for member in enum_type:
        assert enum_type.parse(member) is member
        assert enum_type.parse(member.value.upper()) is member
        assert enum_type.parse(f" {member.value.title()} ") is member


def test_parse_errors_list_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="'none', 'fast', 'standard', 'full'"):
        HashPolicy.parse("quick")
    with pytest.raises(ValueError, match="not a DigestPolicy"):
        DigestPolicy.parse(3)
    with pytest.raises(ValueError, match="'minimal'"):
        digest_function("tiny")


def test_values() -> None:
    assert [member.value for member in HashPolicy] == ["none", "fast", "standard", "full"]
    assert [member.value for member in DigestPolicy] == ["full", "short", "fast", "minimal"]
    assert str(HashPolicy.STANDARD) == "standard"
    assert isinstance(HashPolicy.FAST, str)
