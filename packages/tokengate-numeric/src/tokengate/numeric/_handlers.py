"""Fingerprint handlers for numpy, pandas, torch, cupy and Pillow objects.

Nothing here imports numpy, pandas, torch, cupy or PIL: every handler reads only attributes
of the object it is given (``shape``, ``dtype``, ``mode`` ...), so an object's library is
already loaded by the time its handler runs. Every value a handler returns is built from
plain Python values (``int``, ``str``, ``bool``, ``float``, ``None`` and tuples of them), so
the same array, frame, tensor or image gives an equal fingerprint in every process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from tokengate.hashing import HandlerRegistry

__all__ = (
    "HANDLERS",
    "categorical_fingerprint",
    "cupy_ndarray_fingerprint",
    "dataframe_fingerprint",
    "extension_array_fingerprint",
    "index_fingerprint",
    "multiindex_fingerprint",
    "ndarray_fingerprint",
    "numpy_scalar_fingerprint",
    "pil_image_fingerprint",
    "register_handlers",
    "series_fingerprint",
    "tensor_fingerprint",
)

_TEXT_LIMIT: Final = 200
_LABEL_ITEMS: Final = 64
_LABEL_DEPTH: Final = 6
_PLAIN_TYPES: Final[frozenset[type]] = frozenset({int, float, complex, str, bytes, bool})

# -- plain-value helpers -----------------------------------------------------------------

_DTYPE_TEXT_LIMIT: Final = 512
# id(dtype) -> (dtype, str(dtype)). The entry holds the dtype object, so its id cannot be
# reused while cached, and a hit is confirmed with `is`: the text is exactly str() of that
# very object, never of a merely "equal" dtype. str() of a numpy dtype costs several
# microseconds; builtin dtypes are singletons, so nearly every lookup hits.
_dtype_texts: dict[int, tuple[object, str]] = {}


def _dtype_text(dtype: object) -> str:
    """``str(dtype)``, memoised by identity (bounded)."""
    entry = _dtype_texts.get(id(dtype))
    if entry is not None and entry[0] is dtype:
        return entry[1]
    text = str(dtype)[:_TEXT_LIMIT]
    if len(_dtype_texts) >= _DTYPE_TEXT_LIMIT:
        _dtype_texts.clear()
    _dtype_texts[id(dtype)] = (dtype, text)
    return text


def _shape(shape: Any) -> tuple[int, ...]:
    """A shape as a plain tuple of Python ints (``torch.Size``, lists, numpy ints ...)."""
    if type(shape) is not tuple:
        shape = tuple(shape)
    for size in shape:
        if type(size) is not int:
            return tuple([int(size) for size in shape])
    return cast(tuple[int, ...], shape)


def _text(value: object) -> str:
    try:
        return str(value)[:_TEXT_LIMIT]
    except Exception:
        return "<unprintable>"


def _type_name(value: object) -> str:
    tp = type(value)
    return f"{tp.__module__}.{tp.__qualname__}"


def _plain(value: object, depth: int = 0) -> Hashable:
    """A label (a Series or Index name) as plain Python values.

    ``None`` and builtin scalars stay as they are (subclasses such as ``numpy.float64`` or
    ``numpy.str_`` become the builtin); numpy scalars become their ``.item()``; tuples are
    converted item by item; anything else becomes ``(type name, str(value))``.
    """
    if value is None:
        return None
    tp = type(value)
    if tp in _PLAIN_TYPES:
        return value
    if isinstance(value, tuple):
        if depth >= _LABEL_DEPTH:
            return ("tuple", len(value))
        return tuple([_plain(item, depth + 1) for item in value[:_LABEL_ITEMS]])
    if tp.__module__ == "numpy":
        try:
            item = value.item()  # type: ignore[attr-defined]
        except Exception:
            return (_type_name(value), _text(value))
        if type(item).__module__ != "numpy":
            return _plain(item, depth + 1)
        return (_type_name(value), _text(value))
    try:
        # Subclasses of builtin scalars (IntEnum, numpy.float64, numpy.str_ ...) become the
        # builtin, so the label pickles and compares as plain data.
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, complex):
            return complex(value)
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, bytes):
            return bytes(value)
    except Exception:
        pass
    return (_type_name(value), _text(value))


def _labels(values: Iterable[object]) -> tuple[Hashable, ...]:
    return tuple([_plain(value) for value in values])


# -- numpy -------------------------------------------------------------------------------


def ndarray_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``numpy.ndarray`` (and of subclasses such as ``numpy.matrix``).

    Returns:
        ``('ndarray', shape, dtype)``: shape as a tuple of ints, dtype as ``str(dtype)``
        (e.g. ``('ndarray', (3, 4), 'float64')``). The contents are never read.
    """
    return ("ndarray", _shape(obj.shape), _dtype_text(obj.dtype))


def numpy_scalar_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a numpy scalar (any ``numpy.generic``): its Python value.

    ``numpy.float64(1.5)`` → ``1.5``, ``numpy.int32(3)`` → ``3``, ``numpy.bool_(True)`` →
    ``True`` (so a numpy scalar and the equal Python number share a fingerprint). Scalars
    that have no Python equivalent (``longdouble``, ``clongdouble``) give
    ``(dtype, str(value))``.
    """
    value = obj.item()
    if type(value).__module__ == "numpy":
        return (_dtype_text(obj.dtype), _text(obj))
    return cast(Hashable, value)


# -- pandas ------------------------------------------------------------------------------


def _frame_dtypes(obj: Any) -> tuple[str, ...]:
    dtypes: Any = None
    # The block manager lists the column dtypes about ten times faster than the public
    # ``DataFrame.dtypes`` (which builds a Series); fall back when it is not there.
    getter = getattr(getattr(obj, "_mgr", None), "get_dtypes", None)
    if callable(getter):
        try:
            dtypes = getter()
            if len(dtypes) != obj.shape[1]:
                dtypes = None
        except Exception:
            dtypes = None
    if dtypes is None:
        dtypes = obj.dtypes
    return tuple([_dtype_text(dtype) for dtype in dtypes])


def dataframe_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``pandas.DataFrame`` (and of its subclasses).

    Returns:
        ``('DataFrame', shape, dtypes)``: shape as ``(rows, columns)``, dtypes as a tuple of
        ``str(dtype)``, one per column (e.g. ``('DataFrame', (3, 2), ('int64', 'str'))``).
        Column labels and values are not part of it.
    """
    return ("DataFrame", _shape(obj.shape), _frame_dtypes(obj))


def series_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``pandas.Series`` (and of its subclasses).

    Returns:
        ``('Series', length, dtype, name)``: the name as plain Python values (see
        `index_fingerprint`), e.g. ``('Series', 3, 'int64', 'price')``.
    """
    return ("Series", len(obj), _dtype_text(obj.dtype), _plain(obj.name))


def index_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``pandas.Index`` and its subclasses (``RangeIndex``,
    ``DatetimeIndex``, ``CategoricalIndex`` ...; ``MultiIndex`` has its own).

    Returns:
        ``('Index', length, dtype, name)``. Names become plain values: builtin scalars stay,
        numpy scalars become their ``.item()``, tuples are converted item by item, anything
        else becomes ``(type name, str(name))``.
    """
    return ("Index", len(obj), _dtype_text(obj.dtype), _plain(obj.name))


def multiindex_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``pandas.MultiIndex``.

    Returns:
        ``('MultiIndex', length, level_dtypes, names)``: one dtype string and one plain name
        per level, e.g. ``('MultiIndex', 4, ('int64', 'str'), ('year', None))``.
    """
    levels = tuple([_dtype_text(level.dtype) for level in obj.levels])
    return ("MultiIndex", len(obj), levels, _labels(obj.names))


def categorical_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``pandas.Categorical``.

    Returns:
        ``('Categorical', length, categories_dtype, n_categories, ordered)``, e.g.
        ``('Categorical', 5, 'str', 3, False)``. The categories themselves are not read.
    """
    categories = obj.categories
    return (
        "Categorical",
        len(obj),
        _dtype_text(categories.dtype),
        len(categories),
        bool(obj.ordered),
    )


def extension_array_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of any other pandas extension array (``IntegerArray``, ``StringArray``,
    ``BooleanArray``, ``DatetimeArray``, ``IntervalArray``, ``SparseArray`` ... and
    third-party ``ExtensionArray`` subclasses).

    Returns:
        ``('ExtensionArray', shape, dtype)``, e.g. ``('ExtensionArray', (2,), 'Int64')``.
    """
    return ("ExtensionArray", _shape(obj.shape), _dtype_text(obj.dtype))


# -- torch -------------------------------------------------------------------------------


def tensor_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``torch.Tensor`` (and of subclasses such as ``nn.Parameter``).

    Returns:
        ``('Tensor', shape, dtype, device)`` as plain values, e.g.
        ``('Tensor', (2, 3), 'torch.float32', 'cpu')``. A 0-d (scalar) tensor uses the same
        form with shape ``()``: its value is never read, so no GPU synchronisation happens
        and every tensor keeps the same family of keys. A tensor without a regular shape
        (a nested tensor) gets shape ``None``.
    """
    try:
        shape: tuple[int, ...] | None = _shape(obj.shape)
    except Exception:
        shape = None
    return ("Tensor", shape, _dtype_text(obj.dtype), _text(obj.device))


# -- cupy --------------------------------------------------------------------------------


def cupy_ndarray_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``cupy.ndarray``.

    Returns:
        ``('cupy.ndarray', shape, dtype)``, e.g. ``('cupy.ndarray', (1024,), 'float32')``.
        Reads only metadata: no device memory is touched.
    """
    return ("cupy.ndarray", _shape(obj.shape), _dtype_text(obj.dtype))


# -- Pillow ------------------------------------------------------------------------------


def pil_image_fingerprint(obj: Any) -> Hashable:
    """Fingerprint of a ``PIL.Image.Image`` (and of the per-format subclasses that
    ``Image.open`` returns).

    Returns:
        ``('PIL.Image', mode, size)``, e.g. ``('PIL.Image', 'RGB', (640, 480))``.
    """
    return ("PIL.Image", str(obj.mode), _shape(obj.size))


# -- the table ---------------------------------------------------------------------------

_Handler = Callable[[Any], Hashable]

HANDLERS: Final[Mapping[str, _Handler]] = MappingProxyType(
    {
        # numpy 1.x and 2.x: both classes live in the top-level namespace.
        "numpy.ndarray": ndarray_fingerprint,
        "numpy.generic": numpy_scalar_fingerprint,
        # pandas >= 3 reports the public module; pandas 2.x the defining one.
        "pandas.DataFrame": dataframe_fingerprint,
        "pandas.core.frame.DataFrame": dataframe_fingerprint,
        "pandas.Series": series_fingerprint,
        "pandas.core.series.Series": series_fingerprint,
        "pandas.MultiIndex": multiindex_fingerprint,
        "pandas.core.indexes.multi.MultiIndex": multiindex_fingerprint,
        "pandas.Index": index_fingerprint,
        "pandas.core.indexes.base.Index": index_fingerprint,
        "pandas.Categorical": categorical_fingerprint,
        "pandas.core.arrays.categorical.Categorical": categorical_fingerprint,
        "pandas.api.extensions.ExtensionArray": extension_array_fingerprint,
        "pandas.core.arrays.base.ExtensionArray": extension_array_fingerprint,
        # torch: every tensor class derives from torch.Tensor.
        "torch.Tensor": tensor_fingerprint,
        # Current cupy sets ``__module__ = 'cupy'``; older releases report the defining
        # extension module.
        "cupy.ndarray": cupy_ndarray_fingerprint,
        "cupy._core.core.ndarray": cupy_ndarray_fingerprint,
        "cupy.core.core.ndarray": cupy_ndarray_fingerprint,
        # Pillow: Image.new returns Image.Image; Image.open returns a subclass of it.
        "PIL.Image.Image": pil_image_fingerprint,
    }
)
"""Every handler of this package by the ``"module.QualName"`` of the class it covers.

Several names map to one handler where library versions place a class in different modules.
A class matches when it, or any class in its ``__mro__``, has one of these names, so
subclasses (``numpy.matrix``, a ``DataFrame`` subclass, ``torch.nn.Parameter``) get their
family's fingerprint.
"""


def register_handlers(registry: HandlerRegistry) -> None:
    """Register every handler of `HANDLERS` with ``registry.register_lazy``.

    Imports nothing: a handler applies once an object whose class (or a base) has the
    registered name is fingerprinted. The plugin calls this from its
    ``tokengate_register_hash_handlers`` hook; call it yourself to fill a private
    `tokengate.hashing.HandlerRegistry`.

    Args:
        registry: the registry to fill.
    """
    for name, handler in HANDLERS.items():
        registry.register_lazy(name, handler)
