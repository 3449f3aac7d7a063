"""TokenGate core: awaitable tokens, the routing coordinator, executors and plugins.

Decorate a synchronous function with :func:`task_token_guard`; while an
:class:`OperationsCoordinator` runs, each call returns a :class:`TaskToken` at once and the
body runs on a pinned worker of the right core domain.
"""

from __future__ import annotations

import logging as _logging

from tokengate.hashing import DigestPolicy as DigestPolicy
from tokengate.hashing import HashPolicy as HashPolicy

from ._config import CoordinatorConfig as CoordinatorConfig
from ._coordinator import OperationsCoordinator as OperationsCoordinator
from ._enums import StorageSpeed as StorageSpeed
from ._enums import TokenState as TokenState
from ._enums import Weight as Weight
from ._errors import ConfigurationError as ConfigurationError
from ._errors import CoordinatorNotRunningError as CoordinatorNotRunningError
from ._errors import PluginError as PluginError
from ._errors import ProcessDomainError as ProcessDomainError
from ._errors import RoutingError as RoutingError
from ._errors import TagValidationError as TagValidationError
from ._errors import TaskKilledError as TaskKilledError
from ._errors import TaskKilledException as TaskKilledException
from ._errors import TokenCancelledError as TokenCancelledError
from ._errors import TokenGateError as TokenGateError
from ._errors import TokenTimeoutError as TokenTimeoutError
from ._executors import ExecutorBackend as ExecutorBackend
from ._executors import ExecutorDomain as ExecutorDomain
from ._executors import ExecutorFactory as ExecutorFactory
from ._executors import ExecutorRegistry as ExecutorRegistry
from ._executors import ExecutorStats as ExecutorStats
from ._extensions import DefaultRoutingPolicy as DefaultRoutingPolicy
from ._extensions import OperationInfo as OperationInfo
from ._extensions import RoutingPolicy as RoutingPolicy
from ._extensions import TokenExtension as TokenExtension
from ._guard import GuardedFunction as GuardedFunction
from ._guard import current_coordinator as current_coordinator
from ._guard import task_token_guard as task_token_guard
from ._hookspecs import hookimpl as hookimpl
from ._metrics import CoordinatorStats as CoordinatorStats
from ._metrics import CoreStats as CoreStats
from ._metrics import ExecutionRecord as ExecutionRecord
from ._metrics import OperationStats as OperationStats
from ._plugins import PluginHost as PluginHost
from ._plugins import PluginInfo as PluginInfo
from ._plugins import plugin_manager as plugin_manager
from ._policies import DigestPolicyRegistry as DigestPolicyRegistry
from ._policies import HashPolicyRegistry as HashPolicyRegistry
from ._policies import TagRegistry as TagRegistry
from ._protocols import CoordinatorView as CoordinatorView
from ._run import run_token as run_token
from ._threads_policy import OperationDecision as OperationDecision
from ._token import TaskToken as TaskToken

# Silent unless configured: no "last resort" output to stderr from library loggers.
_logging.getLogger("tokengate").addHandler(_logging.NullHandler())

__all__ = (
    "ConfigurationError",
    "CoordinatorConfig",
    "CoordinatorNotRunningError",
    "CoordinatorStats",
    "CoordinatorView",
    "CoreStats",
    "DefaultRoutingPolicy",
    "DigestPolicy",
    "DigestPolicyRegistry",
    "ExecutionRecord",
    "ExecutorBackend",
    "ExecutorDomain",
    "ExecutorFactory",
    "ExecutorRegistry",
    "ExecutorStats",
    "GuardedFunction",
    "HashPolicy",
    "HashPolicyRegistry",
    "OperationDecision",
    "OperationInfo",
    "OperationStats",
    "OperationsCoordinator",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "ProcessDomainError",
    "RoutingError",
    "RoutingPolicy",
    "StorageSpeed",
    "TagRegistry",
    "TagValidationError",
    "TaskKilledError",
    "TaskKilledException",
    "TaskToken",
    "TokenCancelledError",
    "TokenExtension",
    "TokenGateError",
    "TokenState",
    "TokenTimeoutError",
    "Weight",
    "current_coordinator",
    "hookimpl",
    "plugin_manager",
    "run_token",
    "task_token_guard",
)
