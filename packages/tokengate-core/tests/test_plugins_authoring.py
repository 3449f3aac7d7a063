"""A plugin author's mistakes are caught by mypy or at registration; plugins registered later
apply to operations decorated earlier; fingerprints do not depend on import order; the
shipped pytest fixtures work."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tokengate.core import OperationsCoordinator, TokenState, Weight, plugin_manager
from tokengate.core import task_token_guard as guard
from tokengate.core._plugins import PluginHost
from tokengate.core.plugin import (
    HOOK_NAMES,
    HOOK_PARAMETERS,
    OperationInfo,
    Plugin,
    PluginError,
    PluginLoadWarning,
    RoutingPolicy,
    check_plugin,
    hookimpl,
)
from tokengate.core.testing import PluginRegistrar, check_no_leaks, registered_plugin

ROOT = Path(__file__).resolve().parents[3]
CORE_SRC = ROOT / "packages" / "tokengate-core" / "src" / "tokengate" / "core"
WAIT = 10.0

#: hook → the PluginHost method that calls it (every hook has one).
HOST_METHODS: Mapping[str, str] = {
    "tokengate_classify_weight": "classify_weight",
    "tokengate_routing_policy": "routing_policy",
    "tokengate_token_extension": "token_extensions",
    "tokengate_register_hash_handlers": "register_hash_handlers",
    "tokengate_register_hash_policies": "hash_policies",
    "tokengate_register_digest_policies": "digest_policies",
    "tokengate_register_tags": "tags",
    "tokengate_register_executors": "executors",
    "tokengate_token_created": "token_created_notifier",
    "tokengate_token_started": "token_started_notifier",
    "tokengate_token_finished": "token_finished_notifier",
    "tokengate_coordinator_started": "coordinator_started",
    "tokengate_coordinator_stopped": "coordinator_stopped",
}


def _python(code: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


# ------------------------------------------------------------------ registration checks
def test_a_misspelled_hook_is_rejected_with_the_closest_name(
    tokengate_plugin: PluginRegistrar,
) -> None:
    class Misspelled(Plugin):
        @hookimpl
        def tokengate_clasify_weight(self, operation_type: str) -> Weight | None:
            return None

    with pytest.raises(PluginError) as caught:
        tokengate_plugin(Misspelled(), "author-misspelled")
    assert str(caught.value) == (
        "plugin 'author-misspelled': 'tokengate_clasify_weight' is not a tokengate hook, so "
        "it would never be called; did you mean 'tokengate_classify_weight'?"
    )
    assert not plugin_manager().has_plugin("author-misspelled")


def test_a_hookimpl_without_the_prefix_is_rejected_too() -> None:
    module = types.ModuleType("author_module_plugin")

    @hookimpl
    def classify_weight(operation_type: str) -> Weight | None:
        return None

    module.classify_weight = classify_weight  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match=r"did you mean 'tokengate_classify_weight'"):
        plugin_manager().register(module)
    assert not plugin_manager().pluggy_manager.is_registered(module)


def test_an_unmarked_hook_and_unknown_parameters_are_rejected() -> None:
    class Unmarked(Plugin):
        def tokengate_classify_weight(
            self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
        ) -> Weight | None:
            return Weight.HEAVY

    class Renamed:
        @hookimpl
        def tokengate_classify_weight(self, name: str) -> Weight | None:
            return None

    with pytest.raises(PluginError, match=r"hook tokengate_classify_weight: .*not marked"):
        check_plugin(Unmarked(), "author-unmarked")
    with pytest.raises(PluginError) as caught:
        plugin_manager().register(Renamed(), name="author-renamed")
    assert str(caught.value) == (
        "plugin 'author-renamed', hook tokengate_classify_weight: parameter(s) name are not "
        "parameters of this hook; it passes (operation_type, func, tags) by these names (an "
        "implementation may take any of them)"
    )


def test_a_plugin_subclass_registers_only_the_hooks_it_overrides(
    tokengate_plugin: PluginRegistrar,
) -> None:
    class OnlyPolicy(Plugin):
        @hookimpl
        def tokengate_routing_policy(self, operation: OperationInfo) -> RoutingPolicy | None:
            return None

    tokengate_plugin(OnlyPolicy(), "author-only-policy")
    info = {p.name: p for p in plugin_manager().plugins()}["author-only-policy"]
    assert info.hooks == ("tokengate_routing_policy",)


def test_hook_parameters_match_the_specifications() -> None:
    assert HOOK_PARAMETERS["tokengate_classify_weight"] == ("operation_type", "func", "tags")
    assert set(HOOK_PARAMETERS) == HOOK_NAMES
    assert all(params for params in HOOK_PARAMETERS.values())


def test_every_hook_has_a_typed_host_method() -> None:
    assert set(HOST_METHODS) == HOOK_NAMES
    for hook, method in HOST_METHODS.items():
        assert callable(getattr(PluginHost, method)), f"{hook}: PluginHost.{method} missing"
        assert hook in (getattr(PluginHost, method).__doc__ or "") or hook.endswith(
            ("classify_weight", "routing_policy", "token_extension")
        ), f"PluginHost.{method} does not say which hook it calls"


def test_no_hook_is_called_by_a_string_name_outside_the_host() -> None:
    offenders = []
    for path in CORE_SRC.rglob("*.py"):
        if path.name in {"_plugins.py", "_hookspecs.py"}:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(arg, ast.Constant) and arg.value in HOOK_NAMES:
                        offenders.append(f"{path.name}:{node.lineno} {arg.value}")
    assert offenders == []


# ------------------------------------------------------------------ bad results, once
def test_a_bad_result_fails_the_decoration_once_naming_plugin_and_hook(
    tokengate_plugin: PluginRegistrar,
) -> None:
    calls: list[str] = []

    class Junk(Plugin):
        @hookimpl
        def tokengate_classify_weight(
            self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
        ) -> Weight | None:
            calls.append(operation_type)
            return "enormous"  # type: ignore[return-value]  # the mistake under test

    tokengate_plugin(Junk(), "author-junk")
    with pytest.raises(PluginError) as caught:

        @guard("author.junk")
        def junk() -> None:
            return None

    assert str(caught.value) == (
        "plugin 'author-junk', hook tokengate_classify_weight: returned 'enormous' for "
        "author.junk; expected a tokengate.core.Weight or None ('enormous' is not a valid "
        "Weight; allowed: heavy, medium, light)"
    )
    assert calls == ["author.junk"]


# ------------------------------------------------------------------ plugin set changes
def test_plans_are_rederived_once_per_change_never_per_call(
    tokengate_coordinator: OperationsCoordinator,
) -> None:
    asked: list[str] = []

    class Counting(Plugin):
        @hookimpl
        def tokengate_classify_weight(
            self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
        ) -> Weight | None:
            asked.append(operation_type)
            return Weight.HEAVY if operation_type == "author.counted" else None

    @guard("author.counted")
    def counted(x: int) -> int:
        return x

    assert counted(0).get(WAIT) == 0
    with registered_plugin(Counting(), "author-counting"):
        tokens = [counted(i) for i in range(50)]
        assert [t.get(WAIT) for t in tokens] == list(range(50))
        assert {t.weight for t in tokens} == {Weight.HEAVY}
        assert asked == ["author.counted"], "the hook ran more than once for one change"
    assert counted(1).weight is Weight.MEDIUM  # unregistered: gone from the next call
    assert asked == ["author.counted"]


def test_a_tag_whose_plugin_left_fails_the_next_calls(
    tokengate_coordinator: OperationsCoordinator,
) -> None:
    class Owner(Plugin):
        @hookimpl
        def tokengate_register_tags(self, registry: Any) -> None:
            registry.add("author_colour", str, None, owner="author-owner")

    with registered_plugin(Owner(), "author-owner"):

        @guard("author.tagged", tags={"author_colour": "red"})
        def tagged() -> str:
            return "ran"

        assert tagged().get(WAIT) == "ran"
    token = tagged()
    error = token.exception(WAIT)
    assert token.state is TokenState.FAILED
    assert isinstance(error, PluginError)
    assert "author.tagged: the plugins changed and its tags no longer validate" in str(error)


# ------------------------------------------------------------------ environment switches
_BROKEN_SITE_FILES = {
    "author_broken_plugin.py": "raise ImportError('broken on purpose')\n",
    "author_handlers_plugin.py": textwrap.dedent(
        """
        from tokengate.core.plugin import hookimpl

        @hookimpl
        def tokengate_register_hash_handlers(registry):
            registry.register_lazy("author_handlers_plugin.Box", lambda box: ("Box",))
        """
    ),
    "author_regfail_plugin.py": textwrap.dedent(
        """
        from tokengate.core.plugin import hookimpl

        @hookimpl
        def tokengate_register_tags(registry):
            raise RuntimeError("tag registration exploded")
        """
    ),
    "author_good_plugin.py": textwrap.dedent(
        """
        from tokengate.core.plugin import hookimpl

        @hookimpl
        def tokengate_classify_weight(operation_type):
            return "heavy" if operation_type == "author.ep" else None
        """
    ),
}


def _site(tmp_path: Path) -> str:
    site = tmp_path / "site"
    site.mkdir()
    for name, text in _BROKEN_SITE_FILES.items():
        (site / name).write_text(text)
    info = site / "author_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: author-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[tokengate]\nbroken = author_broken_plugin\ngood = author_good_plugin\n"
        "handlers = author_handlers_plugin\nregfail = author_regfail_plugin\n"
    )
    return os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])


_LOAD = """
    import json, logging, warnings
    records = []
    logging.getLogger("tokengate.plugins").addHandler(
        type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})()
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            from tokengate.core import plugin_manager
            host = plugin_manager()
            result = {"plugins": sorted(p.name for p in host.plugins())}
        except Exception as exc:
            result = {"raised": f"{type(exc).__name__}: {exc}"}
    result["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    result["where"] = sorted({w.filename for w in caught})
    result["logged"] = records
    print(json.dumps(result))
"""


def test_an_entry_point_that_fails_warns_and_logs(tmp_path: Path) -> None:
    done = _python(_LOAD, {"PYTHONPATH": _site(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert "good" in result["plugins"]
    assert "broken" not in result["plugins"]
    warned = [w for w in result["warnings"] if "broken" in w]
    assert len(warned) == 1
    assert warned[0].startswith(PluginLoadWarning.__name__)
    assert (
        "plugin 'broken' (entry point author_broken_plugin of author-dist) failed to load: "
        in warned[0]
    )
    assert "ImportError('broken on purpose')" in warned[0]
    assert "TOKENGATE_STRICT_PLUGINS=1" in warned[0]
    assert result["where"] == ["<string>"]  # points at the application's line, not ours
    assert any("broken on purpose" in m for m in result["logged"])
    assert (
        "PluginLoadWarning: plugin 'regfail' failed in tokengate_register_tags: "
        "RuntimeError('tag registration exploded'); what it registered there is left out"
    ) in "\n".join(result["warnings"])
    assert (
        "plugin 'handlers' registers fingerprint handlers but its distribution declares no "
        "'tokengate.hash_handlers' entry point: fingerprints made before the plugin host is "
        "first used differ from later ones; declare the same function in that group"
    ) in result["logged"]


def test_strict_plugins_make_it_an_error(tmp_path: Path) -> None:
    done = _python(_LOAD, {"PYTHONPATH": _site(tmp_path), "TOKENGATE_STRICT_PLUGINS": "1"})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["raised"].startswith("PluginError: plugin 'broken'")
    assert "TOKENGATE_STRICT_PLUGINS=1 makes a plugin that fails an error" in result["raised"]


def test_disabled_plugins_are_not_loaded_nor_registrable(tmp_path: Path) -> None:
    code = (
        _LOAD
        + """
    from tokengate.core.plugin import PluginError
    try:
        plugin_manager().register(object(), name="good")
    except PluginError as exc:
        print(json.dumps({"register": str(exc)}))
    """
    )
    done = _python(
        code, {"PYTHONPATH": _site(tmp_path), "TOKENGATE_DISABLED_PLUGINS": "broken, good,regfail"}
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()[-2:]]
    assert "good" not in lines[0]["plugins"]
    assert "broken" not in lines[0]["plugins"]
    assert lines[0]["warnings"] == []
    assert lines[1]["register"] == (
        "plugin 'good' is disabled (TOKENGATE_DISABLED_PLUGINS); remove it from that list to "
        "register it"
    )


# ------------------------------------------------------------------ fingerprint stability
_FINGERPRINTS = """
    import json, sys
    from PIL import Image
    import pandas as pd
    from tokengate.hashing import make_hashable
    objects = [Image.new("RGB", (4, 5)), pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}),
               pd.Series([1.0, 2.0], name="x")]
    if sys.argv[1] == "host-first":
        from tokengate.core import plugin_manager
        plugin_manager()
    core_before = "tokengate.core" in sys.modules
    before = [repr(make_hashable(o)) for o in objects]
    from tokengate.core import plugin_manager
    plugin_manager()
    after = [repr(make_hashable(o)) for o in objects]
    print(json.dumps({"before": before, "after": after, "core_before": core_before}))
"""


def test_fingerprints_do_not_depend_on_load_order() -> None:
    pytest.importorskip("PIL")
    pytest.importorskip("pandas")
    # one fresh interpreter per load order, both at once
    runs = {
        order: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_FINGERPRINTS), order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in ("hashing-first", "host-first")
    }
    results = {}
    for order, process in runs.items():
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
        results[order] = json.loads(out.splitlines()[-1])
    expected = [
        "('PIL.Image', 'RGB', (4, 5))",
        "('DataFrame', (2, 2), ('int64', 'float64'))",
        "('Series', 2, 'float64', 'x')",
    ]
    for order, result in results.items():
        assert result["before"] == expected, order
        assert result["after"] == expected, order
    assert results["hashing-first"]["core_before"] is False  # the core was not even imported
    assert results["host-first"]["core_before"] is True


def test_the_hashing_package_imports_only_the_standard_library() -> None:
    done = _python(
        """
        import sys
        before = set(sys.modules)
        import tokengate.hashing as h
        h.make_hashable({"a": [1, 2]})
        h.make_hashable(object())
        new = {m.split(".")[0] for m in set(sys.modules) - before}
        stdlib = set(sys.stdlib_module_names) | {"tokengate", "_distutils_hack"}
        print(sorted(new - stdlib))
        """
    )
    assert done.returncode == 0, done.stderr
    # the numeric handlers module is the plugin's (loaded from its entry point), not ours
    assert done.stdout.split("\n")[-2] == "[]"


def test_the_core_uses_only_the_public_api_of_tokengate_hashing() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in CORE_SRC.rglob("*.py"))
    assert "._by_name" not in text
    assert "._by_type" not in text


# ------------------------------------------------------------------ the shipped fixtures
@pytest.mark.tokengate(cores=3, workers_per_core=1)
def test_the_coordinator_fixture_takes_marker_settings(
    tokengate_coordinator: OperationsCoordinator,
) -> None:
    assert tokengate_coordinator.running
    assert tokengate_coordinator.config.cores == 3
    assert tokengate_coordinator.config.workers_per_core == 1


def test_check_no_leaks_names_what_leaked() -> None:
    with OperationsCoordinator(cores=1, workers_per_core=1) as coordinator:

        @guard("author.leak")
        def leak(x: int) -> int:
            return x

        assert leak(1).get(WAIT) == 1
    check_no_leaks(coordinator)  # clean: nothing raised

    class Leaky:
        name = "leaky"

        def in_flight(self) -> list[str]:
            return ["<TaskToken author.leak#1 executing>"]

    with pytest.raises(AssertionError, match=r"1 token\(s\) of leaky still in flight"):
        check_no_leaks(Leaky())  # type: ignore[arg-type]


def test_the_pytest_plugin_fixtures_in_a_user_project(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            from tokengate.core import task_token_guard, plugin_manager, Weight
            from tokengate.core.plugin import Plugin, hookimpl

            class Heavy(Plugin):
                @hookimpl
                def tokengate_classify_weight(self, operation_type, func, tags):
                    return Weight.HEAVY

            @task_token_guard("user.op")
            def op(x: int) -> int:
                return x * 2

            def test_op(tokengate_coordinator, tokengate_plugin):
                assert op(2).get(10) == 4
                tokengate_plugin(Heavy(), "user-heavy")
                assert op(3).weight is Weight.HEAVY

            def test_plugin_gone():
                assert not plugin_manager().has_plugin("user-heavy")
                assert op.__wrapped__(5) == 10
            """
        )
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 passed" in done.stdout


# ------------------------------------------------------------------ the type checker's part
_MYPY_PROBE = """
from __future__ import annotations

from typing_extensions import override

from tokengate.core import task_token_guard
from tokengate.core.plugin import OperationInfo, Plugin, Weight, hookimpl


class WrongReturn(Plugin):
    @hookimpl
    def tokengate_routing_policy(self, operation: OperationInfo) -> str:
        return "core 2"


class WrongParameterType(Plugin):
    @hookimpl
    def tokengate_classify_weight(self, operation_type: int, func: object, tags: object) -> Weight:
        return Weight.HEAVY


class Misspelled(Plugin):
    @override
    @hookimpl
    def tokengate_clasify_weight(self, operation_type: str) -> Weight | None:
        return None


@task_token_guard("probe.double")
def double(x: int) -> int:
    return 2 * x


body: int = double.__wrapped__(2)
wrong: str = double.__wrapped__(2)
token_result: int = double(3).get()
"""


def test_mypy_reports_wrong_overrides_and_types_wrapped(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(_MYPY_PROBE)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--no-incremental",
            "probe.py",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    errors = sorted(
        (int(line.split(":")[1]), line.rsplit("[", 1)[-1].rstrip("]"))
        for line in done.stdout.splitlines()
        if ": error:" in line
    )
    lines = _MYPY_PROBE.splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if text in line)

    assert errors == [
        (line_of("-> str:"), "override"),
        (line_of("operation_type: int"), "override"),
        (line_of("def tokengate_clasify_weight"), "misc"),
        (line_of("wrong: str"), "assignment"),
    ], done.stdout


# ------------------------------------------------------------------ lifecycle failures
def test_a_failing_lifecycle_hook_names_plugin_and_hook(
    tokengate_coordinator: OperationsCoordinator, tokengate_plugin: PluginRegistrar
) -> None:
    class Exploding(Plugin):
        @hookimpl
        def tokengate_token_started(self, token: Any) -> None:
            if token.operation_type == "author.lifecycle":
                raise RuntimeError("started hook exploded")

    tokengate_plugin(Exploding(), "author-exploding")

    @guard("author.lifecycle")
    def body() -> int:
        return 1

    token = body()
    error = token.exception(WAIT)
    assert token.state is TokenState.FAILED
    assert isinstance(error, PluginError)
    assert (
        f"plugin 'author-exploding' failed in tokengate_token_started for {token.token_id}: "
        "RuntimeError('started hook exploded')" in str(error)
    )


def test_the_typed_plugin_class_mirrors_the_pluggy_specifications() -> None:
    import inspect

    from tokengate.core._hookspecs import HookSpecs

    typed = {name for name in vars(Plugin) if name.startswith("tokengate_")}
    assert typed == HOOK_NAMES
    for name in HOOK_NAMES:
        spec = getattr(HookSpecs, name)
        public = getattr(Plugin, name)
        assert list(inspect.signature(public).parameters) == list(
            inspect.signature(spec).parameters
        ), name
        spec_options = getattr(spec, "tokengate_spec")  # noqa: B009
        assert spec_options["firstresult"] == (name in FIRST_RESULT), name
        assert inspect.getdoc(public), f"Plugin.{name} has no docstring"


FIRST_RESULT = {"tokengate_classify_weight", "tokengate_routing_policy"}


def test_concurrent_callers_rederive_a_plan_once_per_change(
    tokengate_coordinator: OperationsCoordinator, tokengate_plugin: PluginRegistrar
) -> None:
    import threading

    asked: list[str] = []

    class Counting(Plugin):
        @hookimpl
        def tokengate_classify_weight(
            self, operation_type: str, func: Callable[..., Any], tags: Mapping[str, object]
        ) -> Weight | None:
            if operation_type == "author.raced":
                asked.append(operation_type)
                return Weight.LIGHT
            return None

    @guard("author.raced")
    def raced(x: int) -> int:
        return x

    assert raced(0).get(WAIT) == 0
    tokengate_plugin(Counting(), "author-raced")
    start = threading.Barrier(8)
    weights: list[set[Weight]] = []
    lock = threading.Lock()

    def caller() -> None:
        start.wait(WAIT)
        tokens = [raced(i) for i in range(100)]
        seen = {t.weight for t in tokens}
        assert [t.get(WAIT) for t in tokens] == list(range(100))
        with lock:
            weights.append(seen)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert len(weights) == 8
    assert all(seen == {Weight.LIGHT} for seen in weights)
    assert asked == ["author.raced"], f"the plan was derived {len(asked)} times for one change"
