"""Desired vs actual children: what to create, what to restore, what is not ours. Pure.

A child matches when every field the operator renders has the rendered value; fields the API
server or other controllers add (defaults, clusterIP, status, extra labels) are theirs. A
child that drifted is restored with a JSON merge patch of the rendered manifest: maps merge,
lists (containers, volumes, ports) are replaced whole, so a hand edit cannot linger.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from optimodel.operator import api, autoscaling, naming

# create: missing; update: the rendering changed (spec, build, settings); restore: someone
# edited the child by hand; conflict: an object of that name is not ours; keep: all good;
# delete: ours, but no longer rendered (an autoscaler after autoscaling was turned off or
# its engine changed).
ChildAction = Literal["create", "update", "restore", "conflict", "keep", "delete"]


@dataclass(frozen=True)
class ChildChange:
    """What to do about one rendered child."""

    action: ChildAction
    desired: Mapping[str, Any]
    actual: Mapping[str, Any] | None
    difference: str | None = None

    @property
    def kind(self) -> str:
        return str(self.desired["kind"])

    @property
    def name(self) -> str:
        return str(self.desired["metadata"]["name"])


# Maps whose extra keys change behaviour, so they must equal the rendering: a label added
# to a Service's selector would stop it from reaching the Triton pods.
EXACT_MAPS: Mapping[str, frozenset[str]] = {"Service": frozenset({"spec.selector"})}


def first_difference(
    desired: Any, actual: Any, path: str = "", exact: frozenset[str] = frozenset()
) -> str | None:
    """Path of the first rendered field whose actual value differs, or None if all match."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return path or "(object)"
        if path in exact and set(actual) - set(desired):
            return path
        for key, value in desired.items():
            found = first_difference(
                value, actual.get(key), f"{path}.{key}" if path else key, exact
            )
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return path
        for index, (want, have) in enumerate(zip(desired, actual, strict=True)):
            found = first_difference(want, have, f"{path}[{index}]", exact)
            if found is not None:
                return found
        return None
    return None if desired == actual else path


def _at(document: Mapping[str, Any] | None, path: str) -> Any:
    node: Any = document
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def controlled_by(child: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether `child`'s controller reference points at the model with `owner_uid`."""
    for reference in (child.get("metadata") or {}).get("ownerReferences") or []:
        if (
            reference.get("controller")
            and reference.get("uid") == owner_uid
            and reference.get("kind") == api.KIND
        ):
            return True
    return False


def comparable(
    desired: Mapping[str, Any], scaled_elsewhere: bool, autoscaled: str | None = None
) -> dict[str, Any]:
    """The rendered fields the operator keeps enforcing after creation.

    With autoscaling on, the autoscaler owns a Deployment's replicas after creation (only
    the Deployment named `autoscaled`, when given: the spot tier, not the fixed base). An
    autoscaler's cap belongs to the budget: it is compared and patched on its own
    (`autoscaling.autoscaler_cap_patch`), so a new cap never rewrites the autoscaler."""
    if autoscaling.is_autoscaler(desired):
        return autoscaling.without_cap(desired)
    wanted = copy.deepcopy(dict(desired))
    name = (wanted.get("metadata") or {}).get("name")
    if (
        scaled_elsewhere
        and wanted.get("kind") == "Deployment"
        and (autoscaled is None or name == autoscaled)
    ):
        wanted.get("spec", {}).pop("replicas", None)
    return wanted


def rendered_hash(manifest: Mapping[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _annotated(manifest: Mapping[str, Any], digest: str) -> dict[str, Any]:
    stamped = copy.deepcopy(dict(manifest))
    metadata = stamped.setdefault("metadata", {})
    metadata["annotations"] = {**metadata.get("annotations", {}), naming.RENDERED_HASH: digest}
    return stamped


def plan_child(
    desired: Mapping[str, Any],
    actual: Mapping[str, Any] | None,
    owner_uid: str,
    scaled_elsewhere: bool,
    autoscaled: str | None = None,
) -> ChildChange:
    """Compare one rendered child with the cluster.

    Each child carries the hash of what was rendered for it, which tells a changed rendering
    (update) from a hand edit (restore)."""
    wanted = comparable(desired, scaled_elsewhere, autoscaled)
    digest = rendered_hash(wanted)
    if actual is None:
        return ChildChange("create", _annotated(desired, digest), None)
    if not controlled_by(actual, owner_uid):
        return ChildChange("conflict", desired, actual)
    wanted = _annotated(wanted, digest)
    difference = first_difference(
        wanted, actual, exact=EXACT_MAPS.get(str(desired.get("kind")), frozenset())
    )
    if difference is None:
        return ChildChange("keep", wanted, actual)
    annotations = (actual.get("metadata") or {}).get("annotations") or {}
    action: ChildAction = "restore" if annotations.get(naming.RENDERED_HASH) == digest else "update"
    return ChildChange(action, wanted, actual, difference)


def plan_children(
    desired: Sequence[Mapping[str, Any]],
    actual: Mapping[tuple[str, str], Mapping[str, Any] | None],
    owner_uid: str,
    scaled_elsewhere: bool,
    autoscaled: str | None = None,
) -> list[ChildChange]:
    """One change per rendered child; `actual` is keyed by (kind, name)."""
    return [
        plan_child(
            child,
            actual.get((str(child["kind"]), str(child["metadata"]["name"]))),
            owner_uid,
            scaled_elsewhere,
            autoscaled,
        )
        for child in desired
    ]


def plan_removals(
    desired: Sequence[Mapping[str, Any]],
    actual: Mapping[tuple[str, str], Mapping[str, Any] | None],
    owner_uid: str,
    removable: Sequence[tuple[str, str]],
) -> list[ChildChange]:
    """Children in `removable` (kind, name) that exist, are controlled by this model and are
    no longer rendered. Objects of those names that are not ours are left alone."""
    rendered = {(str(child["kind"]), str(child["metadata"]["name"])) for child in desired}
    changes: list[ChildChange] = []
    for key in removable:
        found = actual.get(key)
        if key not in rendered and found is not None and controlled_by(found, owner_uid):
            changes.append(ChildChange("delete", found, found))
    return changes


def restore_patch(change: ChildChange) -> dict[str, Any]:
    """The merge patch restoring a drifted child (apiVersion/kind/name are not patched)."""
    patch = {
        key: copy.deepcopy(value)
        for key, value in change.desired.items()
        if key not in ("apiVersion", "kind")
    }
    metadata = {
        k: v for k, v in patch.get("metadata", {}).items() if k not in ("name", "namespace")
    }
    patch["metadata"] = metadata
    # A merge patch only adds map keys: remove the extra ones where the map must be exact.
    for path in EXACT_MAPS.get(change.kind, frozenset()):
        have, want = _at(change.actual, path), _at(patch, path)
        if isinstance(have, Mapping) and isinstance(want, dict):
            want.update({key: None for key in have if key not in want})
    return patch
