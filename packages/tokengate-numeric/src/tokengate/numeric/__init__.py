"""TokenGate fingerprint handlers for numpy, pandas, torch, cupy and Pillow objects.

Installed, the distribution registers itself as the ``numeric`` plugin (entry point
``tokengate.numeric._plugin``): arrays, frames, tensors and images passed to a decorated
operation are then keyed by shape and type, never by content, for sticky routing. Importing
this package imports none of those libraries. See ``docs/numeric.md``.
"""

from __future__ import annotations

from ._handlers import HANDLERS as HANDLERS
from ._handlers import categorical_fingerprint as categorical_fingerprint
from ._handlers import cupy_ndarray_fingerprint as cupy_ndarray_fingerprint
from ._handlers import dataframe_fingerprint as dataframe_fingerprint
from ._handlers import extension_array_fingerprint as extension_array_fingerprint
from ._handlers import index_fingerprint as index_fingerprint
from ._handlers import multiindex_fingerprint as multiindex_fingerprint
from ._handlers import ndarray_fingerprint as ndarray_fingerprint
from ._handlers import numpy_scalar_fingerprint as numpy_scalar_fingerprint
from ._handlers import pil_image_fingerprint as pil_image_fingerprint
from ._handlers import register_handlers as register_handlers
from ._handlers import series_fingerprint as series_fingerprint
from ._handlers import tensor_fingerprint as tensor_fingerprint

__all__: tuple[str, ...] = (
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
