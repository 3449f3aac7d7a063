"""Validated configuration of an ``OperationsCoordinator``."""

from __future__ import annotations

import math
import os
import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ._enums import StorageSpeed

__all__ = ("DEFAULT_STORAGE_LIMITS", "CoordinatorConfig", "machine_cpus")

DEFAULT_STORAGE_LIMITS: dict[StorageSpeed, int] = {
    StorageSpeed.SLOW: 10,
    StorageSpeed.MODERATE: 25,
    StorageSpeed.FAST: 50,
    StorageSpeed.INSANE: 70,
}


def machine_cpus() -> list[int]:
    """The CPUs this process may run on (``os.sched_getaffinity`` where available)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return sorted(getaffinity(0))
        except OSError:
            pass
    return list(range(os.cpu_count() or 1))


class CoordinatorConfig(BaseModel):
    """Settings of a coordinator; every field is validated when the coordinator is made.

    Attributes:
        cores: number of core domains (default: the CPUs this process may use).
        workers_per_core: worker threads per core domain.
        mailbox_capacity: accepted and validated for older configurations, but unused: the
            thread executor's workers share their domain's queue (no per-worker mailbox).
        storage_limits: concurrent calls allowed per storage tier.
        pin_cpus: bind each domain's threads and process to one CPU (Linux).
        history_size: execution records kept (newest first).
        operation_stats_limit: operations tracked in ``stats().operations``.
        stop_timeout: seconds ``stop(wait=True)`` waits when no timeout is given
            (``math.inf``: as long as the admitted work takes).
        process_start_method: how process-domain workers start (``spawn`` or ``forkserver``).
        executor: the default executor of operations whose tags name none (``thread``,
            ``process``, ``auto`` or a plugin's executor name).
        max_calls_per_process: replace a domain's worker process after it ran this many
            calls (None: never).
        max_memory_per_process: replace a domain's worker process, between two calls, once
            its resident size exceeds this many bytes (None: never).
        process_batch_size: most calls per message to a worker process.
        processes_per_core: worker processes per core domain of the process executor (None:
            one, and more, up to the CPUs usable, while the domain has a backlog).
        max_blocking_threads: blocking (IO-bound) bodies of the thread executor running at
            once, all core domains of the coordinator together (storage-tier operations are
            capped by their tier instead).
        max_compensation_threads: extra threads a core domain may start while its bodies wait
            for other tokens (managed blocking), so that a lead waiting for its children on
            its own core completes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cores: int = Field(default_factory=lambda: len(machine_cpus()), ge=1, le=1024, strict=True)
    workers_per_core: int = Field(default=4, ge=1, le=256, strict=True)
    mailbox_capacity: int = Field(default=4096, ge=1, strict=True)
    storage_limits: dict[StorageSpeed, int] = Field(
        default_factory=lambda: dict(DEFAULT_STORAGE_LIMITS)
    )
    pin_cpus: StrictBool = False
    history_size: int = Field(default=10_000, ge=0, strict=True)
    operation_stats_limit: int = Field(default=1024, ge=1, strict=True)
    stop_timeout: float = Field(default=60.0, gt=0)
    process_start_method: Literal["spawn", "forkserver"] = "spawn"
    executor: str = Field(default="thread", min_length=1, strict=True)
    max_calls_per_process: int | None = Field(default=None, ge=1, strict=True)
    max_memory_per_process: int | None = Field(default=None, ge=2**20, strict=True)
    process_batch_size: int = Field(default=64, ge=1, le=4096, strict=True)
    processes_per_core: int | None = Field(default=None, ge=1, le=256, strict=True)
    max_blocking_threads: int = Field(default=40, ge=1, le=4096, strict=True)
    max_compensation_threads: int = Field(default=32, ge=0, le=4096, strict=True)

    @field_validator("stop_timeout")
    @classmethod
    def _check_stop_timeout(cls, value: float) -> float:
        if value != math.inf and value > threading.TIMEOUT_MAX:
            raise ValueError(
                f"must be at most {threading.TIMEOUT_MAX:g} seconds (threading.TIMEOUT_MAX), "
                "or math.inf to wait as long as the work takes"
            )
        return value

    @field_validator("executor", mode="after")
    @classmethod
    def _lower_executor(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("storage_limits", mode="before")
    @classmethod
    def _parse_limits(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        limits = dict(DEFAULT_STORAGE_LIMITS)
        for tier, limit in value.items():
            limits[StorageSpeed.parse(tier)] = limit
        for tier, limit in limits.items():
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise ValueError(f"the limit of storage tier {tier.value} must be an int >= 1")
        return limits
