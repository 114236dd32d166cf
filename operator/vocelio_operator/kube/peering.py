"""Reading kopf's peering object: whether a live peer outranks this replica. kopf
pauses a replica when a peer with a higher priority is alive; the reconciler reads
the same published status to stop writing at once, rather than at its next event.
Pure; called by the peering event handler in `kube.handlers`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def outranked(status: Mapping[str, Any], priority: int, now: dt.datetime) -> bool:
    """True when a peer listed in a kopf peering object's status is alive (last seen
    within its lifetime) and has a higher priority than `priority`."""
    for peer in status.values():
        if not isinstance(peer, Mapping):
            continue
        try:
            peer_priority = int(peer.get("priority", 0))
            lifetime = dt.timedelta(seconds=int(peer.get("lifetime", 60)))
            lastseen = dt.datetime.fromisoformat(str(peer["lastseen"]))
        except (KeyError, TypeError, ValueError):
            continue  # an entry this replica cannot read does not pause it
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=dt.UTC)
        if peer_priority > priority and lastseen + lifetime > now:
            return True
    return False
