"""The ``numeric`` plugin: the entry point ``tokengate.numeric._plugin`` of the ``tokengate``
group.

The core's plugin host loads this module and calls its hook whenever plugins change. The hook
registers the handlers lazily by qualified class name, so loading the plugin imports none of
numpy, pandas, torch, cupy or PIL.
"""

from __future__ import annotations

from tokengate.core import hookimpl
from tokengate.hashing import HandlerRegistry

from ._handlers import register_handlers

__all__ = ("tokengate_register_hash_handlers",)


@hookimpl
def tokengate_register_hash_handlers(registry: HandlerRegistry) -> None:
    """Register the numpy, pandas, torch, cupy and Pillow fingerprint handlers.

    Args:
        registry: the handler registry the core fills (``tokengate.hashing.default_registry``).
    """
    register_handlers(registry)
