"""Meta-tests: every public name is exported, documented, and in the docs page."""

from __future__ import annotations

import inspect
from pathlib import Path

import tokengate.hashing as hashing

DOCS = Path(__file__).resolve().parents[3] / "docs" / "hashing.md"


def test_all_names_exist_and_have_docstrings() -> None:
    assert isinstance(hashing.__all__, tuple)
    for name in hashing.__all__:
        obj = getattr(hashing, name)
        if name == "Handler":
            continue  # a type alias
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_every_public_name_is_in_the_docs_page() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [name for name in hashing.__all__ if f"`{name}" not in text]
    assert not missing


def test_no_namespace_init() -> None:
    package_root = Path(hashing.__file__).resolve().parents[1]
    assert not (package_root / "__init__.py").exists()
