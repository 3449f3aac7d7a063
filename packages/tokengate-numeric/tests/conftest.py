"""Shared fixtures for the tokengate-numeric tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tokengate.core import PluginHost, plugin_manager
from tokengate.numeric import _plugin


@pytest.fixture
def numeric_host() -> Iterator[PluginHost]:
    """The process-wide plugin host with the ``numeric`` plugin registered.

    The plugin must have been autoloaded from its entry point; only when autoloading is
    switched off (``TOKENGATE_DISABLE_PLUGIN_AUTOLOAD``) is it registered by hand here.
    """
    host = plugin_manager()
    added = False
    if not host.has_plugin("numeric"):
        assert os.environ.get("TOKENGATE_DISABLE_PLUGIN_AUTOLOAD"), (
            f"the numeric entry point did not load: {host.load_errors}"
        )
        host.register(_plugin, name="numeric")
        added = True
    yield host
    if added:
        host.unregister(name="numeric")
