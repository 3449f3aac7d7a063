"""The trace context crosses the hop to the Dask executor: the token span is made in the
coordinator's process and is current around the body on a real Dask worker process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import otel_procfuncs
import pytest
from otel_support import WAIT, Otel, wait_for_spans

from tokengate.core import OperationsCoordinator, task_token_guard

distributed = pytest.importorskip("distributed")
dask_executor = pytest.importorskip("tokengate.dask")

#: distributed's classes carry no annotations
Client: Any = distributed.Client
LocalCluster: Any = distributed.LocalCluster


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: 8787 may be taken
            host="127.0.0.1",
        ) as cluster,
        Client(cluster, set_as_default=False) as made,
    ):
        made.wait_for_workers(1, timeout=WAIT)
        yield made


def test_token_span_is_current_on_the_dask_worker(otel: Otel, client: Any) -> None:
    executor = dask_executor.DaskExecutor(client)
    with OperationsCoordinator(executor=executor, cores=1, stop_timeout=30):
        remote_ids = task_token_guard("otel_dask_ids")(otel_procfuncs.current_span_ids)
        tracer = otel.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            token = remote_ids()
        trace_id, span_id, valid = token.get(timeout=WAIT)
    assert valid, "no span was current around the body on the Dask worker"
    (span,) = wait_for_spans(otel, 1, "otel_dask_ids")
    assert span.context is not None
    assert (trace_id, span_id) == (span.context.trace_id, span.context.span_id)
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["tokengate.token.state"] == "completed"
    assert attributes["tokengate.executor"] == "dask"
