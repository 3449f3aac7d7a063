"""TokenGate hash conductor: lead tokens open domains that keep their descendants on one core.

An operation tagged ``external_calls`` is a *lead*. Each of its tokens opens a domain whose
seed is a digest of the token id and the call list; every token created by code running in
the domain is counted into it at creation and routed to the lead's core, and the domain
closes when the lead and every descendant have finished. Installing the distribution is
enough: the plugin is loaded through the ``tokengate`` entry-point group.
"""

from __future__ import annotations

from ._domains import DomainInfo as DomainInfo
from ._domains import conductor_snapshot as conductor_snapshot
from ._domains import get_active_seed as get_active_seed
from ._seeds import compute_seed as compute_seed

__all__: tuple[str, ...] = (
    "DomainInfo",
    "compute_seed",
    "conductor_snapshot",
    "get_active_seed",
)
