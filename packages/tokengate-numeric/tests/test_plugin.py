"""The plugin: entry point, hook, lazy names that match the installed libraries' classes."""

from __future__ import annotations

import importlib.metadata
import io
import warnings
from collections.abc import Callable

import pytest

from tokengate.core import PluginHost
from tokengate.hashing import HandlerRegistry, default_registry, make_hashable
from tokengate.numeric import (
    HANDLERS,
    _plugin,
    categorical_fingerprint,
    cupy_ndarray_fingerprint,
    dataframe_fingerprint,
    extension_array_fingerprint,
    index_fingerprint,
    multiindex_fingerprint,
    ndarray_fingerprint,
    numpy_scalar_fingerprint,
    pil_image_fingerprint,
    register_handlers,
    series_fingerprint,
    tensor_fingerprint,
)


def mro_names(tp: type) -> list[str]:
    return [f"{klass.__module__}.{klass.__qualname__}" for klass in tp.__mro__]


def test_entry_point_names_the_plugin_module() -> None:
    points = importlib.metadata.entry_points(group="tokengate", name="numeric")
    assert [point.value for point in points] == ["tokengate.numeric._plugin"]
    assert next(iter(points)).load() is _plugin


def test_hook_is_a_module_level_hookimpl() -> None:
    hook = _plugin.tokengate_register_hash_handlers
    assert hasattr(hook, "tokengate_impl")
    registry = HandlerRegistry()
    hook(registry)
    assert len(registry) == len(HANDLERS)


def test_register_handlers_registers_every_name_lazily() -> None:
    registry = HandlerRegistry()
    register_handlers(registry)
    for name in HANDLERS:
        assert name in registry
    assert len(registry) == len(HANDLERS)
    assert all("." in name for name in HANDLERS)


def test_every_library_family_has_a_handler() -> None:
    handlers = set(HANDLERS.values())
    assert handlers == {
        ndarray_fingerprint,
        numpy_scalar_fingerprint,
        dataframe_fingerprint,
        series_fingerprint,
        index_fingerprint,
        multiindex_fingerprint,
        categorical_fingerprint,
        extension_array_fingerprint,
        tensor_fingerprint,
        cupy_ndarray_fingerprint,
        pil_image_fingerprint,
    }


def test_plugin_is_autoloaded_and_feeds_the_default_registry(numeric_host: PluginHost) -> None:
    assert numeric_host.has_plugin("numeric")
    registry = default_registry()
    for name in HANDLERS:
        assert name in registry
    info = {plugin.name: plugin for plugin in numeric_host.plugins()}["numeric"]
    assert "tokengate_register_hash_handlers" in info.hooks


def test_make_hashable_uses_the_plugin_once_registered(numeric_host: PluginHost) -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]})
    assert make_hashable(frame) == ("DataFrame", (2, 2), ("int64", "float64"))
    assert make_hashable(np.zeros((2, 2))) == ("ndarray", (2, 2), "float64")
    plugin = numeric_host.unregister(name="numeric")
    try:
        assert "pandas.DataFrame" not in default_registry()
        assert make_hashable(frame) != ("DataFrame", (2, 2), ("int64", "float64"))
    finally:
        numeric_host.register(plugin, name="numeric")
    assert make_hashable(frame) == ("DataFrame", (2, 2), ("int64", "float64"))


# -- the registered names are the real ones of the installed versions -----------------------


def _numpy_cases() -> list[tuple[str, Callable[[], object], object]]:
    np = pytest.importorskip("numpy")

    def matrix() -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return np.matrix([[1]])

    return [
        ("ndarray", lambda: np.zeros(2), ndarray_fingerprint),
        ("matrix", matrix, ndarray_fingerprint),
        ("float64", lambda: np.float64(1.0), numpy_scalar_fingerprint),
        ("int32", lambda: np.int32(1), numpy_scalar_fingerprint),
        ("bool", lambda: np.bool_(True), numpy_scalar_fingerprint),
        ("str_", lambda: np.str_("a"), numpy_scalar_fingerprint),
        ("datetime64", lambda: np.datetime64("2020-01-01"), numpy_scalar_fingerprint),
    ]


def _pandas_cases() -> list[tuple[str, Callable[[], object], object]]:
    pd = pytest.importorskip("pandas")
    return [
        ("DataFrame", lambda: pd.DataFrame({"a": [1]}), dataframe_fingerprint),
        ("Series", lambda: pd.Series([1]), series_fingerprint),
        ("Index", lambda: pd.Index([1, 2]), index_fingerprint),
        ("RangeIndex", lambda: pd.RangeIndex(2), index_fingerprint),
        ("DatetimeIndex", lambda: pd.date_range("2020", periods=2), index_fingerprint),
        ("MultiIndex", lambda: pd.MultiIndex.from_tuples([(1, 2)]), multiindex_fingerprint),
        ("Categorical", lambda: pd.Categorical(["a"]), categorical_fingerprint),
        ("IntegerArray", lambda: pd.array([1, None], dtype="Int64"), extension_array_fingerprint),
        ("StringArray", lambda: pd.array(["a"], dtype="string"), extension_array_fingerprint),
        ("SparseArray", lambda: pd.arrays.SparseArray([0, 1]), extension_array_fingerprint),
    ]


def _torch_cases() -> list[tuple[str, Callable[[], object], object]]:
    torch = pytest.importorskip("torch")
    return [
        ("tensor", lambda: torch.tensor([1.0, 2.0]), tensor_fingerprint),
        ("scalar tensor", lambda: torch.tensor(1.0), tensor_fingerprint),
        ("Parameter", lambda: torch.nn.Parameter(torch.zeros(2)), tensor_fingerprint),
    ]


def _pillow_cases() -> list[tuple[str, Callable[[], object], object]]:
    image = pytest.importorskip("PIL.Image")

    def opened() -> object:
        buffer = io.BytesIO()
        image.new("L", (2, 2)).save(buffer, format="PNG")
        buffer.seek(0)
        return image.open(buffer)

    return [
        ("Image.new RGB", lambda: image.new("RGB", (2, 2)), pil_image_fingerprint),
        ("Image.new P", lambda: image.new("P", (2, 2)), pil_image_fingerprint),
        ("PngImageFile", opened, pil_image_fingerprint),
    ]


@pytest.mark.parametrize(
    "cases", [_numpy_cases, _pandas_cases, _torch_cases, _pillow_cases], ids=lambda f: f.__name__
)
def test_registered_names_match_the_installed_classes(
    cases: Callable[[], list[tuple[str, Callable[[], object], object]]],
) -> None:
    registry = HandlerRegistry()
    register_handlers(registry)
    for label, build, expected in cases():
        tp = type(build())
        assert any(name in HANDLERS for name in mro_names(tp)), (label, mro_names(tp))
        assert registry.handler_for(tp) is expected, (label, mro_names(tp))
