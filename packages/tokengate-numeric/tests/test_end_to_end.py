"""End to end: arrays of one shape stay on one core; different shapes may spread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("numpy")

import numpy as np

from tokengate.core import OperationsCoordinator, PluginHost, TaskToken, task_token_guard

SAME_SHAPE_CALLS = 24
SHAPES = [(rows, 3) for rows in range(1, 13)]


def test_same_shape_arrays_stick_to_one_core_different_shapes_spread(
    numeric_host: PluginHost,
) -> None:
    assert numeric_host.has_plugin("numeric")
    release = threading.Event()

    @task_token_guard(operation_type="arr_op", tags={"weight": "medium"})
    def arr_op(array: np.ndarray[Any, Any]) -> tuple[int, ...]:
        # Blocks so every token stays in flight while the test inspects the pins.
        if not release.wait(timeout=60):
            raise TimeoutError("the test never released arr_op")
        return tuple(array.shape)

    coordinator = OperationsCoordinator(cores=4, workers_per_core=2)
    coordinator.start()
    tokens: list[TaskToken[tuple[int, ...]]] = []
    try:
        same = [arr_op(np.full(8, float(n))) for n in range(SAME_SHAPE_CALLS)]
        tokens += same
        same_cores = {token.core_id for token in same}
        assert len(same_cores) == 1
        (pinned_core,) = same_cores
        assert pinned_core in {2, 3, 4}  # a medium core
        pins = coordinator.sticky_snapshot()
        assert list(pins.values()) == [pinned_core]
        (pin_text,) = pins
        assert pin_text.startswith("arr_op:")
        assert "ndarray" in pin_text

        different = [arr_op(np.zeros(shape)) for shape in SHAPES]
        tokens += different
        spread = {token.core_id for token in different}
        assert len(spread) > 1
        assert spread <= {2, 3, 4}
        assert len(coordinator.sticky_snapshot()) == 1 + len(SHAPES)
        # A second array of an already-pinned shape joins that shape's core.
        again = arr_op(np.ones(SHAPES[5]))
        tokens.append(again)
        assert again.core_id == different[5].core_id
    finally:
        release.set()
        results = [token.get(timeout=60) for token in tokens]
        coordinator.stop()
    assert results[:SAME_SHAPE_CALLS] == [(8,)] * SAME_SHAPE_CALLS
    assert results[SAME_SHAPE_CALLS:-1] == SHAPES
    assert results[-1] == SHAPES[5]
    assert coordinator.sticky_snapshot() == {}


def _frames(count: int) -> list[object]:
    pd = pytest.importorskip("pandas")
    return [pd.DataFrame({"a": [n, n + 1], "b": ["x", str(n)]}) for n in range(count)]


def _tensors(count: int) -> list[object]:
    torch = pytest.importorskip("torch")
    return [torch.full((2, 2), float(n)) for n in range(count)]


def _images(count: int) -> list[object]:
    image = pytest.importorskip("PIL.Image")
    return [image.new("RGB", (4, 4), (n, n, n)) for n in range(count)]


@pytest.mark.parametrize("build", [_frames, _tensors, _images], ids=lambda f: f.__name__[1:])
def test_same_shaped_frames_tensors_and_images_share_one_pin(
    numeric_host: PluginHost, build: Any
) -> None:
    values: list[object] = build(10)
    release = threading.Event()

    @task_token_guard(operation_type="family_op", tags={"weight": "medium"})
    def family_op(value: object) -> str:
        if not release.wait(timeout=60):
            raise TimeoutError("the test never released family_op")
        return type(value).__name__

    coordinator = OperationsCoordinator(cores=4, workers_per_core=2)
    coordinator.start()
    tokens: list[TaskToken[str]] = []
    try:
        tokens = [family_op(value) for value in values]
        assert len({token.core_id for token in tokens}) == 1
        assert len(coordinator.sticky_snapshot()) == 1
    finally:
        release.set()
        results = [token.get(timeout=60) for token in tokens]
        coordinator.stop()
    assert results == [type(value).__name__ for value in values]
    assert coordinator.sticky_snapshot() == {}
