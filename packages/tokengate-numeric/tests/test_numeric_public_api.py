"""Meta-tests: every public name is exported, documented, and in the docs pages."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import tokengate.numeric as numeric

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_all_names_exist_and_have_docstrings() -> None:
    assert isinstance(numeric.__all__, tuple)
    assert len(set(numeric.__all__)) == len(numeric.__all__)
    for name in numeric.__all__:
        obj = getattr(numeric, name)
        if name == "HANDLERS":
            continue  # a read-only mapping: documented by its attribute docstring
        assert inspect.getdoc(obj), f"{name} has no docstring"


def test_every_public_name_is_in_the_docs_page() -> None:
    text = (DOCS / "numeric.md").read_text(encoding="utf-8")
    missing = [name for name in numeric.__all__ if f"`{name}" not in text]
    assert not missing


def test_every_registered_name_is_in_the_docs_page() -> None:
    text = (DOCS / "numeric.md").read_text(encoding="utf-8")
    missing = [name for name in numeric.HANDLERS if f"`{name}`" not in text]
    assert not missing


def test_api_page_renders_the_package() -> None:
    text = (DOCS / "api" / "numeric.md").read_text(encoding="utf-8")
    assert "# tokengate.numeric" in text
    assert "::: tokengate.numeric" in text


def test_handlers_table_is_read_only() -> None:
    table = numeric.HANDLERS
    assert "numpy.ndarray" in table
    with pytest.raises(TypeError):
        table["x.Y"] = numeric.ndarray_fingerprint  # type: ignore[index]
    assert "x.Y" not in table


def test_no_namespace_init() -> None:
    package_root = Path(numeric.__file__).resolve().parents[1]
    assert not (package_root / "__init__.py").exists()
