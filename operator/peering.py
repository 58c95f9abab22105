"""Is this operator the acting peer? Kopf's peering rule, for the operator's own periodic loop.

Kopf pauses a replica's watches while a live peer of higher (or equal) priority is in the
(Cluster)KopfPeering object's status, and resumes them when it is not. Kopf handlers are
paused with it; the periodic loop (periodic.py) is not a Kopf handler, so before each round
it reads the same peering object(s) and applies the same rule (`acting_peer`, pure): it acts
only when its own identity is registered and alive, and no other live peer has a priority at
least as high. In namespaced mode every watched namespace's KopfPeering must agree, as Kopf
pauses the whole operator on a conflict in any of them. Standalone operators always act.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from optimodel.operator.kube import CLUSTER_PEERINGS, PEERINGS, KubeApi, KubeError

# Kopf's default peer lifetime (kopf.OperatorSettings().peering.lifetime) for entries that
# do not state theirs.
DEFAULT_LIFETIME_SECONDS = 60


def _alive(entry: Mapping[str, Any], now: datetime) -> bool:
    seen = entry.get("lastseen")
    if not isinstance(seen, str):
        return False
    try:
        lastseen = datetime.fromisoformat(seen)
    except ValueError:
        return False
    if lastseen.tzinfo is None:
        lastseen = lastseen.replace(tzinfo=UTC)
    lifetime = entry.get("lifetime", DEFAULT_LIFETIME_SECONDS)
    seconds = lifetime if isinstance(lifetime, int) else DEFAULT_LIFETIME_SECONDS
    return lastseen + timedelta(seconds=seconds) > now


def acting_peer(
    status: Mapping[str, Any] | None, identity: str, priority: int, now: datetime
) -> bool:
    """Whether, by this peering object's status, the peer `identity` acts (pure)."""
    peers = status or {}
    own = peers.get(identity)
    if not isinstance(own, Mapping) or not _alive(own, now):
        return False  # not registered yet, or expired: Kopf has not resumed us either
    for other, entry in peers.items():
        if other == identity or not isinstance(entry, Mapping) or not _alive(entry, now):
            continue
        if int(entry.get("priority", 0)) >= priority:
            return False
    return True


@dataclass(frozen=True)
class PeeringGate:
    """Answers "may the periodic loop act now?" for one operator process."""

    api: KubeApi
    identity: str
    priority: int
    name: str
    standalone: bool
    namespaces: Sequence[str]  # empty: cluster-wide (ClusterKopfPeering)

    async def acting(self) -> bool:
        if self.standalone:
            return True
        now = datetime.now(UTC)
        try:
            if not self.namespaces:
                found = await self.api.get(CLUSTER_PEERINGS, "", self.name)
                return found is not None and acting_peer(
                    found.get("status"), self.identity, self.priority, now
                )
            for namespace in self.namespaces:
                found = await self.api.get(PEERINGS, namespace, self.name)
                if found is None or not acting_peer(
                    found.get("status"), self.identity, self.priority, now
                ):
                    return False
        except KubeError:
            return False  # unknown: do not act (Kopf would not either, without its peering)
        return True
