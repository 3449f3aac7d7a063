"""Static typing of ``task_token_guard`` (ParamSpec) and ``TaskToken``.

The functions prefixed ``_static_`` are never called: ``mypy --strict`` over the tests checks
them. ``assert_type`` fails the type check if a call site stops seeing ``TaskToken[R]``; the
``# type: ignore[...]`` comments fail it (as unused ignores, under ``warn_unused_ignores``) if
the decorated function stops rejecting wrong arguments, i.e. if the ParamSpec is lost. The
runtime part checks what the same annotations promise at run time.
"""

from __future__ import annotations

import inspect
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import assert_type

import pytest

from tokengate.core import OperationsCoordinator, TaskToken, task_token_guard

WAIT = 10.0
ROOT = Path(__file__).resolve().parents[3]


@task_token_guard()
def scale(values: list[float], factor: float = 2.0, *, label: str = "") -> dict[str, float]:
    return {label or "sum": sum(v * factor for v in values)}


@task_token_guard(operation_type="typing.nothing")
def nothing() -> None:
    return None


@task_token_guard(tags={"weight": "light"})
def first(items: tuple[int, ...]) -> int | None:
    return items[0] if items else None


def _static_call_sites() -> None:
    token = scale([1.0, 2.0], 3.0, label="x")
    assert_type(token, TaskToken[dict[str, float]])
    assert_type(token.get(), dict[str, float])
    assert_type(token.result(timeout=1.0), dict[str, float])
    assert_type(token.exception(), BaseException | None)
    assert_type(token.done(), bool)
    assert_type(token.kill("reason"), bool)
    assert_type(token.token_id, str)
    assert_type(token.core_id, int | None)
    assert_type(token.conductor_seed, str | None)
    assert_type(nothing(), TaskToken[None])
    assert_type(first((1, 2)).get(), int | None)
    decorated: Callable[[list[float]], TaskToken[dict[str, float]]] = scale
    assert callable(decorated)


def _static_wrong_calls_are_rejected() -> None:
    scale(["a"])  # type: ignore[list-item]
    scale([1.0], "twice")  # type: ignore[arg-type]
    scale([1.0], label=3)  # type: ignore[arg-type]
    scale([1.0], colour="red")  # type: ignore[call-arg]
    scale()  # type: ignore[call-arg]
    nothing(1)  # type: ignore[call-arg]
    wrong: TaskToken[str] = scale([1.0])  # type: ignore[assignment]
    assert wrong


def _static_decorator_misuse_is_rejected() -> None:
    def plain(x: int) -> int:
        return x

    task_token_guard(plain)  # type: ignore[arg-type]
    task_token_guard(operation_type=3)  # type: ignore[arg-type]


async def _static_await() -> None:
    value = await scale([1.0])
    assert_type(value, dict[str, float])
    maybe = await first(())
    assert_type(maybe, int | None)


def test_the_static_checks_are_not_run() -> None:
    # They only exist for mypy; make sure they stay importable and callable-shaped.
    for fn in (_static_call_sites, _static_wrong_calls_are_rejected, _static_await):
        assert callable(fn)


def test_runtime_signature_and_hints_follow_the_function() -> None:
    signature = inspect.signature(scale)
    assert list(signature.parameters) == ["values", "factor", "label"]
    assert signature.parameters["label"].kind is inspect.Parameter.KEYWORD_ONLY
    hints = typing.get_type_hints(scale)
    assert hints["return"] == dict[str, float]
    assert hints["values"] == list[float]


def test_runtime_tokens_are_generic(coordinator: OperationsCoordinator) -> None:
    token = scale([1.0, 2.0], label="t")
    assert isinstance(token, TaskToken)
    assert token.get(WAIT) == {"t": 6.0}
    assert TaskToken[int] is not TaskToken  # subscriptable at run time
    assert nothing().get(WAIT) is None
    assert first(()).get(WAIT) is None


def test_wrong_calls_fail_at_run_time_too(coordinator: OperationsCoordinator) -> None:
    # the signature is kept, so a wrong call fails in the body with the usual TypeError
    token = scale([1.0], colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="colour"):
        token.get(WAIT)


@pytest.mark.slow
def test_mypy_sees_the_parameters_of_a_decorated_function(tmp_path: Path) -> None:
    """The static checks above can fail: mypy, with the repository's configuration, accepts
    the right call and reports exactly the wrong one."""
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "typing_probe.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from typing_extensions import assert_type

            from tokengate.core import TaskToken, task_token_guard


            @task_token_guard()
            def render(count: int, *, unit: str = "ms") -> str:
                return f"{count} {unit}"


            assert_type(render(3, unit="s"), TaskToken[str])
            assert_type(render(3).get(), str)
            render("three")
            """
        )
    )
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(snippet),
        ]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert status == 1, stdout + stderr
    assert len(errors) == 1, stdout
    assert "typing_probe.py:16:" in errors[0]
    # the decorated function's type is GuardedFunction (it exposes a typed __wrapped__)
    assert '"__call__" of "GuardedFunction"' in errors[0]
    assert '"int"' in errors[0]
