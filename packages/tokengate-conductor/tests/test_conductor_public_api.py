"""Meta-tests: the public face, its docstrings, the docs pages and the entry point."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
from pathlib import Path

import pytest

import tokengate.conductor as conductor
from tokengate.conductor import DomainInfo, _plugin
from tokengate.core import OperationsCoordinator, plugin_manager

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "conductor.md"
API = ROOT / "docs" / "api" / "conductor.md"


def test_all_names_exist_and_have_docstrings() -> None:
    assert isinstance(conductor.__all__, tuple)
    assert set(conductor.__all__) >= {"DomainInfo", "conductor_snapshot", "get_active_seed"}
    for name in conductor.__all__:
        assert inspect.getdoc(getattr(conductor, name)), f"{name} has no docstring"
    assert inspect.getdoc(conductor)


def test_every_public_name_is_in_the_docs_page() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert "```mermaid" in text
    missing = [name for name in conductor.__all__ if f"`{name}" not in text]
    assert not missing


def test_the_api_page_renders_the_package() -> None:
    text = API.read_text(encoding="utf-8")
    assert text.startswith("# tokengate.conductor")
    assert "::: tokengate.conductor" in text


def test_no_namespace_init() -> None:
    package_root = Path(conductor.__file__).resolve().parents[1]
    assert package_root.name == "tokengate"
    assert not (package_root / "__init__.py").exists()


def test_the_entry_point_is_loaded_with_its_hooks() -> None:
    points = importlib.metadata.entry_points(group="tokengate", name="conductor")
    assert [point.value for point in points] == ["tokengate.conductor._plugin"]
    host = plugin_manager()
    assert host.get_plugin("conductor") is _plugin
    info = next(p for p in host.plugins() if p.name == "conductor")
    assert info.distribution == "tokengate-conductor"
    assert set(info.hooks) == {
        "tokengate_coordinator_stopped",
        "tokengate_register_tags",
        "tokengate_token_extension",
    }


def test_domain_info_is_frozen() -> None:
    info = DomainInfo("s" * 64, 2, 1, "lead#1", None, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.pending = 3  # type: ignore[misc]


def test_snapshot_of_a_coordinator_that_never_ran_is_empty_and_read_only() -> None:
    snapshot = conductor.conductor_snapshot(OperationsCoordinator(cores=1, workers_per_core=1))
    assert dict(snapshot) == {}
    with pytest.raises(TypeError):
        snapshot["x"] = DomainInfo("x", 1, 1, "l", None, 0)  # type: ignore[index]
