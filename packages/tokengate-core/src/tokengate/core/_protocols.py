"""Small protocols that let a lower layer call up without importing the layer above.

The token is the future and the state gate; it reaches whoever owns it (the coordinator)
only through :class:`TokenOwner`, and reads its compiled operation only through
:class:`PlanView`. Neither protocol names the coordinator or the plan, so ``_token`` imports
nothing above it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol, TypeVar

from ._enums import Weight

__all__ = (
    "AroundExtension",
    "CompletionBridge",
    "CoordinatorView",
    "PlanView",
    "RemoteContextSource",
    "TokenOwner",
)

TokenT = TypeVar("TokenT")
StateT = TypeVar("StateT")


class CompletionBridge(Protocol[TokenT]):
    """Delivers done-callbacks of tokens to one event loop (in batches)."""

    def push(
        self,
        fn: Callable[[TokenT], object],
        token: TokenT,
        ctx: contextvars.Context | None,
    ) -> None:
        """Run ``fn(token)`` on the bridge's loop (in ``ctx`` when given), soon."""


class CoordinatorView(Protocol):
    """What plugins and tokens may rely on of a token's coordinator."""

    @property
    def name(self) -> str:
        """A name unique in the process."""

    def extension_state(self, key: Hashable, factory: Callable[[], StateT]) -> StateT:
        """Per-coordinator state of a plugin, made by ``factory`` on first use under ``key``."""


class TokenOwner(CoordinatorView, Protocol[TokenT]):
    """What a token needs from its owner, and nothing more.

    The owner is told of the terminal move (exactly once per token, before any waiter is
    released) and hands out the completion bridge of an event loop.
    """

    def token_ended(self, token: TokenT) -> None:
        """The release steps of the token's terminal move (sticky pin, records, hooks...)."""

    def tokens_ended(self, tokens: list[TokenT]) -> None:
        """:meth:`token_ended` for a batch of tokens that made their terminal moves together
        (an executor settling a batch of outcomes): the same steps, exactly once per token."""

    def body_returned(self, token: TokenT) -> None:
        """The token's body returned (or raised), whatever the token's state is now."""

    def bridge_for(self, loop: asyncio.AbstractEventLoop) -> CompletionBridge[TokenT]:
        """The completion bridge of ``loop`` (one per loop and owner)."""


class RemoteContextSource(Protocol):
    """An extension that carries context to bodies run in another process or machine."""

    def remote_context(self, token: Any, /) -> object:
        """A picklable value for :meth:`remote_scope`, or None."""


class AroundExtension(Protocol):
    """An extension that runs code around a body, in the body's thread."""

    def before_execute(self, token: Any, /) -> object:
        """Right before the body; the result goes to :meth:`after_execute`."""

    def after_execute(self, token: Any, state: object, /) -> None:
        """Right after the body returned or raised."""


class PlanView(Protocol):
    """The parts of a compiled operation that the token reads."""

    @property
    def func(self) -> Callable[..., Any]:
        """The undecorated function."""

    @property
    def operation_type(self) -> str:
        """The operation's name."""

    @property
    def weight(self) -> Weight:
        """The routing class."""

    @property
    def anchor(self) -> str:
        """The sticky anchor: keys of operations with the same anchor share pins."""

    @property
    def public_tags(self) -> Mapping[str, object]:
        """The user's validated tags."""

    @property
    def process(self) -> bool:
        """True when the operation runs on the process executor."""

    @property
    def on_started(self) -> Callable[..., object] | None:
        """The ``tokengate_token_started`` caller, or None when no plugin implements it."""

    @property
    def ext_remote(self) -> tuple[RemoteContextSource, ...]:
        """Extensions that override ``remote_context``."""

    @property
    def ext_remote_free(self) -> tuple[RemoteContextSource, ...]:
        """``ext_remote`` without the extensions marked ``only_with_state``."""

    @property
    def ext_around(self) -> tuple[AroundExtension, ...]:
        """Extensions that override ``before_execute`` or ``after_execute``."""

    @property
    def ext_around_free(self) -> tuple[AroundExtension, ...]:
        """``ext_around`` without the extensions marked ``only_with_state``."""

    @property
    def storage(self) -> object | None:
        """The storage tier whose slot the token holds while its body runs, or None."""

    @property
    def plain(self) -> bool:
        """True when running the token is only running its body (no extension around it,
        no start hook, no storage slot)."""

    @property
    def plain_free(self) -> bool:
        """``plain`` for a token that carries no extension state."""
