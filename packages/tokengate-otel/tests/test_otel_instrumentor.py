"""The instrumentor's life: uninstrument leaves no hook behind, re-instrument works, the
``opentelemetry_instrumentor`` entry point and ``opentelemetry-instrument`` find it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import MappingProxyType

from otel_support import WAIT, Otel

from tokengate.core import (
    OperationInfo,
    OperationsCoordinator,
    Weight,
    plugin_manager,
    task_token_guard,
)
from tokengate.otel import TokenGateInstrumentor

PLUGIN = "tokengate.otel"


def extensions_for(name: str) -> list[object]:
    """The extensions the plugins would give a new operation now."""
    info = OperationInfo(name, lambda: None, MappingProxyType({}), Weight.MEDIUM)
    return [
        ext
        for ext in plugin_manager().token_extensions(info)
        if type(ext).__module__.startswith("tokengate.otel")
    ]


def test_uninstrument_leaves_no_hooks_behind(
    otel: Otel, coordinator: OperationsCoordinator
) -> None:
    host = plugin_manager()
    assert host.has_plugin(PLUGIN)
    assert len(extensions_for("before")) == 1

    @task_token_guard("uninst_before")
    def before() -> int:
        return 1

    assert before().get(timeout=WAIT) == 1
    assert len(otel.token_spans()) == 1
    assert sum(p.value for p in otel.points("tokengate.tokens")) == 1

    TokenGateInstrumentor().uninstrument()
    assert not TokenGateInstrumentor().is_instrumented_by_opentelemetry
    assert not host.has_plugin(PLUGIN)
    assert PLUGIN not in {info.name for info in host.plugins()}
    assert extensions_for("after") == []

    @task_token_guard("uninst_after")
    def after() -> int:
        return 2

    # neither a new operation nor one decorated while instrumented records anything more
    assert after().get(timeout=WAIT) == 2
    assert before().get(timeout=WAIT) == 1
    assert len(otel.token_spans()) == 1
    assert otel.points("tokengate.tokens") == []

    # and it can be turned on again
    TokenGateInstrumentor().instrument(
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
        skip_dep_check=True,
    )
    assert host.has_plugin(PLUGIN)

    @task_token_guard("uninst_again")
    def again() -> int:
        return 3

    assert again().get(timeout=WAIT) == 3
    assert [s.name for s in otel.token_spans()] == ["uninst_before", "uninst_again"]
    counts = {dict(p.attributes)["operation"]: p.value for p in otel.points("tokengate.tokens")}
    assert counts == {"uninst_again": 1}


def test_instrumentor_is_a_singleton_and_declares_what_it_instruments() -> None:
    assert TokenGateInstrumentor() is TokenGateInstrumentor()
    assert list(TokenGateInstrumentor().instrumentation_dependencies()) == [
        "tokengate-core >= 0.1.0"
    ]


def test_entry_point_loads_the_instrumentor() -> None:
    found = [
        ep
        for ep in importlib.metadata.entry_points(group="opentelemetry_instrumentor")
        if ep.name == "tokengate"
    ]
    assert len(found) == 1
    assert found[0].load() is TokenGateInstrumentor


def test_opentelemetry_instrument_turns_it_on_without_code(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            from tokengate.core import OperationsCoordinator, plugin_manager, task_token_guard
            from tokengate.otel import TokenGateInstrumentor

            @task_token_guard("auto_op")
            def work(x: int) -> int:
                return x + 1

            with OperationsCoordinator(cores=1, workers_per_core=1):
                assert work(1).get(timeout=30) == 2
            print("instrumented:", TokenGateInstrumentor().is_instrumented_by_opentelemetry)
            print("plugin:", plugin_manager().has_plugin("tokengate.otel"))
            """
        )
    )
    env = dict(os.environ)
    env.update(
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="",
    )
    command = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(command), sys.executable, str(app)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "instrumented: True" in result.stdout
    assert "plugin: True" in result.stdout
