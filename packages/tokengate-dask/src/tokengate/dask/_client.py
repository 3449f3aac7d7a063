"""Turning what the user passed (a client, an address or nothing) into a usable Dask client."""

from __future__ import annotations

import logging

import distributed

from ._errors import DaskExecutorError

__all__ = ("check_open", "resolve_client")

_log = logging.getLogger("tokengate.dask")

_CLOSED = frozenset({"closed", "closing", "failed"})


def resolve_client(
    client: distributed.Client | str | None, connect_timeout: float
) -> tuple[distributed.Client, bool]:
    """The client to use and whether the executor owns it (and so closes it at the end).

    Raises:
        DaskExecutorError: no client can be found, the address cannot be reached, the client
            is closed or asynchronous.
        TypeError: ``client`` is neither a client, an address string nor None.
    """
    if client is None:
        try:
            found = distributed.get_client()
        except ValueError:
            raise DaskExecutorError(
                "DaskExecutor() found no Dask client in this process: pass one, "
                "DaskExecutor(distributed.Client(...)), or a scheduler address, "
                "DaskExecutor('tcp://host:8786'), or create a distributed.Client before the "
                "coordinator starts"
            ) from None
        check_open(found)
        return found, False
    if isinstance(client, str):
        address = client.strip()
        if not address:
            raise DaskExecutorError(
                "DaskExecutor(''): the scheduler address is empty; pass 'tcp://host:port' "
                "(the address 'dask scheduler' prints) or a distributed.Client"
            )
        try:
            made = distributed.Client(  # type: ignore[no-untyped-call]
                address, timeout=connect_timeout, set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            raise DaskExecutorError(
                f"DaskExecutor({address!r}) could not reach a Dask scheduler there within "
                f"{connect_timeout:g} s ({exc}); check the address ('dask scheduler' prints "
                "it) and that the scheduler runs"
            ) from exc
        _log.info("connected to the Dask scheduler at %s", address)
        return made, True
    if not isinstance(client, distributed.Client):
        raise TypeError(
            f"DaskExecutor(client=...) takes a distributed.Client, a scheduler address string "
            f"or None, not {type(client).__name__} {client!r}"
        )
    check_open(client)
    return client, False


def check_open(client: distributed.Client) -> None:
    """Raise a clear error when ``client`` cannot submit work.

    Raises:
        DaskExecutorError: the client is closed (or closing), or asynchronous.
    """
    status = str(client.status)
    if status in _CLOSED:
        raise DaskExecutorError(
            f"the Dask client {client.id} is {status}; pass an open client "
            "(distributed.Client(...)) or a scheduler address to DaskExecutor"
        )
    if client.asynchronous:
        raise DaskExecutorError(
            f"the Dask client {client.id} is asynchronous; DaskExecutor needs a synchronous "
            "client (distributed.Client(address) without asynchronous=True)"
        )
