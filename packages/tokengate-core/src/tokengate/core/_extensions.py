"""The objects plugins hand to the core: operation info, routing policies, token extensions.

Hooks are consulted once per operation (at decoration); what they return is called directly
on the hot path, so a call never goes through pluggy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ._enums import Weight

if TYPE_CHECKING:
    from ._token import TaskToken

__all__ = ("DefaultRoutingPolicy", "OperationInfo", "RoutingPolicy", "TokenExtension")


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """What a plugin learns about an operation when it is decorated.

    Attributes:
        operation_type: the operation's name.
        func: the undecorated function.
        tags: the validated tags the user gave (enum values normalised), plugin tags included.
        weight: the routing class decided for the operation.
    """

    operation_type: str
    func: Callable[..., Any]
    tags: Mapping[str, object]
    weight: Weight


class RoutingPolicy:
    """Maps weights to core ranges and may choose the core of individual tokens.

    Return an instance from ``tokengate_routing_policy``; the first plugin to return one wins
    (the built-in :class:`DefaultRoutingPolicy` is registered last). Subclass and override
    what you need.
    """

    #: Set to True when :meth:`choose_core` is overridden; the core then calls it per token.
    chooses_cores: bool = False

    def cores_for(self, weight: Weight, total_cores: int) -> Sequence[int]:
        """The cores (numbered 1..total_cores) tokens of ``weight`` may use. Must not be empty."""
        if total_cores <= 1:
            return (1,)
        if weight is Weight.HEAVY:
            return (1,)
        if weight is Weight.MEDIUM or total_cores == 2:
            return tuple(range(2, total_cores + 1))
        return tuple(range(3, total_cores + 1))

    def choose_core(self, token: TaskToken[Any], candidate: int, total_cores: int) -> int | None:
        """Pick the core of ``token``, or None to keep the usual order (sticky, then free).

        ``candidate`` is the core the staggered position counters would give it. Called only
        when :attr:`chooses_cores` is True, and not for conductor domain members.
        """
        return None


class DefaultRoutingPolicy(RoutingPolicy):
    """Routing layer 1: HEAVY → core 1, MEDIUM → cores 2..N, LIGHT → cores 3..N.

    With two cores LIGHT uses core 2; with one core everything uses core 1.
    """


class TokenExtension:
    """Per-operation participant in a token's life, returned by ``tokengate_token_extension``.

    Override only the phases you need: the core detects which methods a subclass overrides
    and calls only those, so an unused phase costs nothing per token. The hash conductor is
    built entirely on this class.

    Every method runs on the hot path of every token of the operation: keep them lean. An
    exception in ``on_create`` or ``route`` fails that token (``FAILED`` with a
    ``PluginError``); in ``before_execute`` it fails the token without running the body; in
    ``after_execute`` and ``on_terminal`` it is logged.

    An extension that acts only on the tokens it marked in ``on_create`` (with
    :meth:`set_state`) sets the class attribute ``only_with_state = True``: the core then
    skips its ``route``, ``before_execute``, ``after_execute``, ``on_terminal`` and
    ``remote_context`` for tokens that no extension stored state for, at no cost per token.
    The conductor's extensions do so: a token created outside any domain pays nothing for them.
    """

    #: True: the phases after ``on_create`` run only for tokens that carry extension state.
    only_with_state: ClassVar[bool] = False

    def on_create(self, token: TaskToken[Any]) -> None:
        """In the calling thread, right after the token is made and before it is routed."""

    def route(self, token: TaskToken[Any], candidate: int) -> int | None:
        """Choose the token's core (first extension to return a core wins), or None."""
        return None

    def before_execute(self, token: TaskToken[Any]) -> object:
        """On the worker, right before the body runs; the return value goes to ``after_execute``."""
        return None

    def after_execute(self, token: TaskToken[Any], state: object) -> None:
        """On the worker, right after the body returned or raised."""

    def remote_context(self, token: TaskToken[Any]) -> object:
        """In the parent, before the body is sent to another process or machine: a picklable
        value that :meth:`remote_scope` re-enters around the body there, or None for nothing.

        Thread executors never call it (``before_execute``/``after_execute`` run around the
        body in the body's own thread instead).
        """
        return None

    @classmethod
    def remote_scope(cls, value: object) -> contextlib.AbstractContextManager[object]:
        """Where a body runs in another process: the context to enter around it, given the
        value :meth:`remote_context` returned. The class must be importable there (it is sent
        by reference)."""
        return contextlib.nullcontext()

    def on_terminal(self, token: TaskToken[Any]) -> None:
        """Exactly once, when the token reaches its terminal state (any of the four)."""

    # ------------------------------------------------------------------ per-token state
    def get_state(self, token: TaskToken[Any]) -> object:
        """What this extension stored for ``token`` with :meth:`set_state`, or None.

        Each extension has its own slot per token (keyed by the extension object's identity), so two
        extensions of one operation never overwrite each other's state.
        """
        store = token._ext
        return None if store is None else store.get(id(self))

    def set_state(self, token: TaskToken[Any], value: object) -> None:
        """Store ``value`` as this extension's state for ``token`` (see :meth:`get_state`)."""
        store = token._ext
        if store is None:
            store = token._ext = {}
        store[id(self)] = value

    def stamp_conductor_seed(self, token: TaskToken[Any], seed: str) -> None:
        """Stamp ``token`` as a member of the conductor domain ``seed`` (in ``on_create``,
        before routing). The stamp is read-only for everyone else: ``token.conductor_seed``
        and the ``conductor_seed`` entry of ``token.tags``.

        Raises:
            RuntimeError: the token already carries another seed.
        """
        current = token._seed
        if current is not None and current != seed:
            raise RuntimeError(
                f"token {token.token_id} is already stamped with seed {current[:12]}; a token "
                "belongs to one conductor domain"
            )
        token._seed = seed


def overrides(ext: object, name: str) -> bool:
    """True when ``type(ext)`` overrides ``TokenExtension.<name>``."""
    return getattr(type(ext), name) is not getattr(TokenExtension, name)
