"""Messages a newcomer meets: settings typos, tags passed as keywords, bad tag values, a wait
that times out as the token ends, a blocking wait inside a running event loop."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest

from tokengate.core import (
    ConfigurationError,
    OperationsCoordinator,
    TagValidationError,
    task_token_guard,
)


def test_a_misspelled_setting_gets_a_did_you_mean() -> None:
    with pytest.raises(
        ConfigurationError, match=r"'core' is not a setting; did you mean 'cores'\?"
    ):
        OperationsCoordinator(core=2)
    with pytest.raises(ConfigurationError, match=r"settings: .*cores"):
        OperationsCoordinator(zzzzzz=1)


def test_tag_names_passed_as_keywords_say_to_use_tags() -> None:
    with pytest.raises(TypeError) as info:
        task_token_guard(weight="light")  # type: ignore[arg-type]
    assert "task_token_guard(tags={'weight': 'light'})" in str(info.value)


def test_a_bad_tag_value_is_one_sentence() -> None:
    with pytest.raises(TagValidationError) as info:
        task_token_guard(tags={"weight": "hevy"})(lambda: None)
    message = str(info.value)
    assert message.endswith("must be one of heavy, medium, light (got 'hevy')")
    assert message.count("heavy") == 1
    with pytest.raises(TagValidationError, match=r"must be True or False \(got 'yes'\)$"):
        task_token_guard(tags={"process_pool": "yes"})(lambda: None)


def test_a_wait_that_times_out_as_the_token_ends_returns_the_result(
    coordinator: OperationsCoordinator,
) -> None:
    # Many short waits racing the end of the body: each either returns the result or raises a
    # TimeoutError whose message says the token is still running, never "completed".
    for i in range(200):
        token = coordinator.submit(pow, i, 2)
        try:
            assert token.get(timeout=1e-5) == i * i
        except TimeoutError as exc:
            message = str(exc)
        else:
            continue
        assert "completed" not in message
        assert token.get(timeout=30) == i * i


def test_get_with_a_timeout_inside_a_running_loop_warns_once_per_call_site(
    coordinator: OperationsCoordinator,
) -> None:
    release = threading.Event()

    def blocked() -> int:
        release.wait(30)
        return 1

    async def main() -> list[warnings.WarningMessage]:
        token = coordinator.submit(blocked)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's own filter: once per location
            for _ in range(3):
                with pytest.raises(TimeoutError):
                    token.get(timeout=0.01)  # one call site, three calls
            with pytest.raises(TimeoutError):
                token.result(timeout=0.01)  # another call site
            with pytest.raises(TimeoutError):
                token.get(timeout=0)  # a timeout of 0 only looks: no warning
        release.set()
        assert await token == 1
        return caught

    caught = asyncio.run(main())
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 2
    assert all(w.filename == __file__ for w in runtime)
    assert "blocks the running event loop" in str(runtime[0].message)
