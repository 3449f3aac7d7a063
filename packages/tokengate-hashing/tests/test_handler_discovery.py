"""The default registry loads installed handlers (``tokengate.hash_handlers`` entry points)
before its first answer, so a fingerprint never depends on what was imported first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Hashable
from pathlib import Path

from tokengate.hashing import HANDLERS_ENTRY_POINT_GROUP, HandlerRegistry


def _site(tmp_path: Path) -> str:
    site = tmp_path / "site"
    if site.exists():
        return os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    site.mkdir()
    (site / "acme_handlers.py").write_text(
        textwrap.dedent(
            """
            class Parcel:
                __hash__ = None
                def __init__(self, weight):
                    self.weight = weight

            def register(registry):
                registry.register_lazy("acme_handlers.Parcel", lambda p: ("Parcel", p.weight))
            """
        )
    )
    (site / "acme_broken.py").write_text("raise RuntimeError('broken handlers')\n")
    info = site / "acme-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{HANDLERS_ENTRY_POINT_GROUP}]\n"
        "acme = acme_handlers:register\n"
        "broken = acme_broken:register\n"
    )
    return os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])


_PROBE = """
    import json, logging, sys
    logged = []
    logging.getLogger("tokengate.plugins").addHandler(
        type("H", (logging.Handler,), {"emit": lambda self, r: logged.append(r.getMessage())})()
    )
    from tokengate.hashing import default_registry, make_hashable, safe_args_key
    import acme_handlers
    first = make_hashable(acme_handlers.Parcel(3))
    print(json.dumps({
        "first": repr(first),
        "args": repr(safe_args_key((acme_handlers.Parcel(4), 1))),
        "errors": list(default_registry().load_errors),
        "logged": logged,
        "core": "tokengate.core" in sys.modules,
    }))
"""


def _probe(tmp_path: Path, **env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROBE)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": _site(tmp_path), **env},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_installed_handlers_apply_from_the_first_call(tmp_path: Path) -> None:
    result = _probe(tmp_path)
    assert result["first"] == "('Parcel', 3)"
    assert result["args"] == "(('Parcel', 4), 1)"
    assert result["core"] is False  # the hashing package alone did it
    errors = result["errors"]
    assert isinstance(errors, list)
    assert len(errors) == 1
    assert isinstance(errors[0], str)
    assert "fingerprint handlers 'broken' (acme_broken:register" in errors[0]
    assert "RuntimeError('broken handlers')" in errors[0]
    assert errors == result["logged"]  # logged on tokengate.plugins, never raised


def test_disabled_and_autoload_switches_skip_discovery(tmp_path: Path) -> None:
    disabled = _probe(tmp_path, TOKENGATE_DISABLED_PLUGINS="acme,broken")
    assert str(disabled["first"]).startswith("('acme_handlers.Parcel', ")  # the generic key
    assert disabled["errors"] == []
    off = _probe(tmp_path, TOKENGATE_DISABLE_PLUGIN_AUTOLOAD="1")
    assert str(off["first"]).startswith("('acme_handlers.Parcel', ")
    assert off["errors"] == []


def test_a_plain_registry_discovers_nothing_and_get_is_exact() -> None:
    registry = HandlerRegistry()
    assert len(registry) == 0
    assert registry.load_errors == ()

    class Base:
        pass

    class Child(Base):
        pass

    def handler(obj: object) -> Hashable:
        return "base"

    registry.register(Base, handler)
    registry.register_lazy("x.Y", handler)
    assert registry.get(Base) is handler
    assert registry.get(Child) is None  # exact key only; handler_for walks the mro
    assert registry.handler_for(Child) is handler
    assert registry.get("x.Y") is handler
    assert registry.get("x.Z") is None
    assert registry.entries() == {Base: handler, "x.Y": handler}
