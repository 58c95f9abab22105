"""A Kubernetes API emulator for the operator's end-to-end tests and benchmarks.

kmock's `KubernetesEmulator` (real HTTP, discovery, an object store, watch streams) with the
API-server behaviour Kopf 1.45 and the operator rely on, which kmock 0.8 lacks:

- create assigns uid, namespace, resourceVersion, generation, creationTimestamp and honours
  generateName (Kopf's Events); status is dropped on create where a status subresource exists;
- PATCH understands JSON patch (a failed `test` op answers 422, as Kopf expects), JSON merge
  patch (strategic merge patch is treated as merge patch), and PUT replaces;
- /status changes only status, the main resource never does; generation bumps on spec changes
  only; no-op patches keep the resourceVersion;
- a stale metadata.resourceVersion in a write answers 409 Conflict;
- watches subscribe before replaying, replay from a resourceVersion (else the current state),
  accept `watch=True` (the kubernetes client's spelling) and honour timeoutSeconds;
- lists and watches filter by labelSelector and fieldSelector (metadata.name/namespace);
- deleting an object garbage-collects the objects whose ownerReferences point at it,
  unless propagationPolicy is Orphan; finalizers delay deletion; a uid precondition that
  does not match answers 409;
- the `scale` subresource (what `kubectl scale` and autoscalers use): GET answers an
  autoscaling/v1 Scale from the declared replica paths, PATCH/PUT of a Scale writes
  spec.replicas (the CRD's specReplicasPath);
- discovery reports `groupVersion: v1` for the core group and declares the resources in use.

Controllers are not emulated: tests play the Job and Deployment controllers by patching
/status (see `tests/cluster.py`).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import apps, dicts, enums, rendering

Body = dict[str, Any]
ObjectKey = tuple[Any, str | None, str]
CLOSE = "__CLOSE__"

# Resources without a status subresource (status, if any, is written with the object).
STATUSLESS = frozenset(
    {"configmaps", "secrets", "events", "namespaces", "kopfpeerings", "clusterkopfpeerings"}
)
# Resources whose metadata.generation tracks spec changes.
NAMESPACE_OBJECTS = re.compile(r"/api/v1/namespaces(?:/(?P<name>[^/]+))?")
# The garbage collector is asynchronous in a real cluster too.
GC_DELAY = 0.05
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")


@dataclass(frozen=True)
class ResourceDecl:
    """One resource the emulator serves (and announces in discovery)."""

    api_version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ("status",)
    # The scale subresource's paths (a CRD's specReplicasPath, statusReplicasPath,
    # labelSelectorPath); no selector path: the selector is spec.selector.matchLabels.
    scale_paths: tuple[str, str, str | None] = ("spec.replicas", "status.replicas", None)


DEFAULT_RESOURCES = (
    ResourceDecl(
        "optimodel.io/v1alpha1",
        "optimizedmodels",
        "OptimizedModel",
        subresources=("status", "scale"),
        scale_paths=("spec.replicas", "status.replicas", "status.selector"),
    ),
    ResourceDecl("batch/v1", "jobs", "Job"),
    ResourceDecl("apps/v1", "deployments", "Deployment", subresources=("status", "scale")),
    ResourceDecl("v1", "pods", "Pod"),
    ResourceDecl("v1", "services", "Service"),
    ResourceDecl("v1", "configmaps", "ConfigMap", subresources=()),
    ResourceDecl(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
    ),
    ResourceDecl("keda.sh/v1alpha1", "scaledobjects", "ScaledObject"),
    ResourceDecl("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", subresources=()),
    ResourceDecl("v1", "events", "Event", subresources=()),
    ResourceDecl("v1", "namespaces", "Namespace", namespaced=False),
    ResourceDecl("v1", "nodes", "Node", namespaced=False),
    ResourceDecl("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    ResourceDecl(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
    ),
)


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details={"code": status}
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Equality-based and set-based (in/notin/exists) label selectors."""
    if not selector:
        return True
    for term in _split_terms(selector):
        term = term.strip()
        if not term:
            continue
        if " notin " in term or " in " in term:
            key, op, values = term.replace("(", " ").replace(")", " ").split(None, 2)
            choices = {v.strip() for v in values.split(",") if v.strip()}
            present = key in labels and labels[key] in choices
            if present != (op == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [*terms, current]


def _field_matches(selector: str, obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, value = term.replace("==", "=").split("=", 1)
        field = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
        if field.get(key) != value:
            return False
    return True


def _at_path(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def scale_of(declaration: ResourceDecl, obj: Mapping[str, Any]) -> Body:
    """The autoscaling/v1 Scale the API server shows for an object's scale subresource."""
    spec_path, status_path, selector_path = declaration.scale_paths
    meta = obj.get("metadata") or {}
    if selector_path is None:
        labels = _at_path(obj, "spec.selector.matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    else:
        selector = _at_path(obj, selector_path) or ""
    scale: Body = {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": int(_at_path(obj, spec_path) or 0)},
        "status": {"replicas": int(_at_path(obj, status_path) or 0)},
    }
    if selector:
        scale["status"]["selector"] = selector
    return scale


def _with_replicas(obj: Body, path: str, replicas: int) -> Body:
    updated = copy.deepcopy(obj)
    *parents, leaf = path.split(".")
    node = updated
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = replicas
    return updated


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with the API-server semantics listed in the module doc."""

    _revision: int = attrs.field(default=0, init=False)
    _history: collections.deque[tuple[int, Any, Body]] = attrs.field(
        factory=lambda: collections.deque(maxlen=200_000), init=False
    )
    _declared: dict[Any, ResourceDecl] = attrs.field(factory=dict, init=False)
    # time.monotonic() of each create, by (plural, namespace, name): for latency benchmarks.
    created_at: dict[tuple[str, str | None, str], float] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for declaration in DEFAULT_RESOURCES:
            self.declare(declaration)

    def declare(self, declaration: ResourceDecl) -> None:
        group, _, version = declaration.api_version.rpartition("/")
        key = kmock.resource(group=group, version=version, plural=declaration.plural)
        self.resources[key] = kmock.ResourceInfo(
            kind=declaration.kind,
            singular=declaration.kind.lower(),
            namespaced=declaration.namespaced,
            verbs=set(VERBS),
            subresources=set(declaration.subresources),
        )
        self._declared[key] = declaration

    def undeclare(self, api_version: str) -> None:
        """Stop serving every resource of a group/version (a cluster without that CRD)."""
        group, _, version = api_version.rpartition("/")
        for key in [k for k in self._declared if (k.group, k.version) == (group, version)]:
            del self._declared[key]
            del self.resources[key]

    # --- request routing ------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        found = NAMESPACE_OBJECTS.fullmatch(raw_request.path)
        if found is None:
            return await super().__call__(raw_request)
        # kmock's path parser reads /api/v1/namespaces/<x> as a namespace scope, not as the
        # Namespace object <x> (and fails on /api/v1/namespaces): build the request here.
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        query = dict(raw_request.query)
        name = found.group("name")
        method = enums.method(raw_request.method)
        watching = query.get("watch", "").lower() in ("true", "1")
        action = {
            enums.method.GET: enums.action.WATCH
            if watching
            else (enums.action.FETCH if name else enums.action.LIST),
            enums.method.POST: enums.action.CREATE,
            enums.method.PATCH: enums.action.UPDATE,
            enums.method.DELETE: enums.action.DELETE,
        }.get(method)
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=method,
            params=query,
            headers=dict(raw_request.headers),
            data=data,
            body=body,
            text=body.decode(errors="replace"),
            action=action,
            resource=kmock.resource(group="", version="v1", plural="namespaces"),
            namespace=None,
            name=name,
        )
        self._requests.append(request)
        return await self._handle(request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await apps.RawHandler._handle(self, request)  # discovery, non-k8s paths
        watch = request.params.get("watch", "").lower() in ("true", "1")
        if request.method == enums.method.GET and watch and request.action != enums.action.WATCH:
            request = self._reinterpret(request, enums.action.WATCH)
        if request.method == enums.method.PUT and request.name is not None:
            request = self._reinterpret(request, enums.action.UPDATE)
        try:
            if request.action == enums.action.CREATE:
                return aiohttp.web.json_response(await self._create(request), status=201)
            if request.action == enums.action.UPDATE:
                return aiohttp.web.json_response(await self._update(request))
            if request.action == enums.action.DELETE:
                return aiohttp.web.json_response(await self._delete_request(request))
            # Served here, not through kmock's reaction matching: that checks each request
            # against every request seen so far, which grows quadratic in a long test run.
            if request.action == enums.action.LIST:
                return aiohttp.web.json_response(await self._serve_list(request))
            if request.action == enums.action.FETCH:
                return aiohttp.web.json_response(await self._serve_fetch(request))
            if request.action == enums.action.WATCH:
                self._known(resource)
                return await self._stream(request)
        except kmock.KubernetesError as error:
            return await self._render_error(error)
        return await apps.RawHandler._handle(self, request)

    async def _stream(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        """A watch: one JSON event per line until the client leaves or the stream ends."""
        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request._raw_request)
        try:
            async for event in self._watch_events(request):
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        return response

    def _reinterpret(self, request: rendering.Request, action: enums.action) -> rendering.Request:
        """The request with the action kmock's parser missed (kmock matches requests by
        identity, so the logged request is replaced too)."""
        fixed = attrs.evolve(request, action=action)
        if 0 <= request.id < len(self._requests) and self._requests[request.id] is request:
            self._requests[request.id] = fixed
        return fixed

    def _known(self, resource: Any) -> ResourceDecl:
        declaration = self._declared.get(resource)
        if declaration is None:
            raise _error(404, "NotFound", f"the server could not find the resource {resource}")
        return declaration

    def _key(self, request: rendering.Request) -> ObjectKey:
        declaration = self._known(request.resource)
        if request.name is None:
            raise _error(405, "MethodNotAllowed", "this call needs an object name")
        return (
            request.resource,
            request.namespace if declaration.namespaced else None,
            request.name,
        )

    def _has_status(self, resource: Any) -> bool:
        return "status" in self._known(resource).subresources

    # --- mutations ------------------------------------------------------------------------

    def _bump(self) -> int:
        self._revision += 1
        return self._revision

    async def _publish(self, resource: Any, kind: str, obj: Body, revision: int) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self._history.append((revision, resource, event))
        await self._buses[resource].put(event)

    async def _create(self, request: rendering.Request) -> Body:
        resource = request.resource
        declaration = self._known(resource)
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(request.data)
        meta = obj.setdefault("metadata", {})
        namespace = request.namespace or meta.get("namespace")
        if declaration.namespaced and not namespace:
            raise _error(400, "BadRequest", "a namespaced object needs a namespace")
        if request.namespace and meta.get("namespace") not in (None, request.namespace):
            raise _error(400, "BadRequest", "the namespace of the object and the URL differ")
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + secrets.token_hex(3)[:5]
        if not name:
            raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
        key: ObjectKey = (resource, namespace if declaration.namespaced else None, str(name))
        async with self._lock:
            # ObjectsArray has no .get()
            existing = self._objects[key] if key in self._objects else None  # noqa: SIM401
            if existing is not None and not existing.deleted:
                raise _error(409, "AlreadyExists", f"{declaration.plural} {name!r} already exists")
            revision = self._bump()
            meta.update(
                name=name,
                uid=str(uuid.uuid4()),
                resourceVersion=str(revision),
                generation=1,
                creationTimestamp=_now(),
            )
            meta.pop("generateName", None)
            if declaration.namespaced:
                meta["namespace"] = namespace
            if self._has_status(resource):
                obj.pop("status", None)
            if existing is not None:
                existing.history.append(obj)
            else:
                self._objects[key] = obj
            self.created_at[(declaration.plural, key[1], key[2])] = time.monotonic()
            if self._dangling(obj):
                # Its owner is gone (deleted while this object was being made): the garbage
                # collector removes it shortly after, as in a real cluster.
                asyncio.get_running_loop().call_later(
                    GC_DELAY, lambda: asyncio.ensure_future(self._collect_orphan(key))
                )
            await self._publish(resource, "ADDED", obj, revision)
        return obj

    def _patched(self, request: rendering.Request, current: Body) -> Body:
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0]
        data = request.data
        if request.method == enums.method.PUT:
            if not isinstance(data, dict):
                raise _error(400, "BadRequest", "PUT needs a JSON object")
            return copy.deepcopy(data)
        if content_type == "application/json-patch+json":
            if not isinstance(data, list):
                raise _error(400, "BadRequest", "a JSON patch is a list of operations")
            try:
                return dict(jsonpatch.apply_patch(current, data, in_place=False))
            except jsonpatch.JsonPatchTestFailed as failure:
                raise _error(422, "Invalid", f"the JSON patch test failed: {failure}") from None
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as failure:
                raise _error(422, "Invalid", f"the JSON patch does not apply: {failure}") from None
        if content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            if not isinstance(data, dict):
                raise _error(400, "BadRequest", "a merge patch is a JSON object")
            return dict(dicts.merge_patch_dict(current, data))
        raise _error(415, "UnsupportedMediaType", f"{content_type} is not supported here")

    async def _update(self, request: rendering.Request) -> Body:
        resource = request.resource
        declaration = self._known(resource)
        key = self._key(request)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise _error(404, "NotFound", f"{declaration.plural} {request.name!r} not found")
            current = copy.deepcopy(self._objects[key].raw)
            if request.subresource == "scale" and "scale" in declaration.subresources:
                scale = self._patched(request, scale_of(declaration, current))
                replicas = (scale.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    raise _error(422, "Invalid", "spec.replicas of a Scale is a count >= 0")
                patched = _with_replicas(current, declaration.scale_paths[0], replicas)
            else:
                patched = self._patched(request, current)
            meta = current["metadata"]
            sent = request.data.get("metadata", {}) if isinstance(request.data, dict) else {}
            sent_version = sent.get("resourceVersion") if isinstance(sent, dict) else None
            if sent_version is not None and str(sent_version) != meta["resourceVersion"]:
                raise _error(
                    409,
                    "Conflict",
                    f"the object has been modified (resourceVersion {sent_version} is stale, "
                    f"now {meta['resourceVersion']}); please apply your changes to the latest "
                    "version and try again",
                )
            if request.subresource == "status":
                updated = copy.deepcopy(current)
                if "status" in patched:
                    updated["status"] = patched["status"]
                else:
                    updated.pop("status", None)
            elif request.subresource is None or (
                request.subresource == "scale" and "scale" in declaration.subresources
            ):
                updated = patched
                if self._has_status(resource):
                    if "status" in current:
                        updated["status"] = current["status"]
                    else:
                        updated.pop("status", None)
            else:
                raise _error(404, "NotFound", f"subresource {request.subresource} is not emulated")
            new_meta = updated.setdefault("metadata", {})
            for fixed in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                if fixed in meta:
                    new_meta[fixed] = meta[fixed]
            new_meta["resourceVersion"] = meta["resourceVersion"]
            spec_of = {k: v for k, v in updated.items() if k not in ("metadata", "status")}
            old_spec = {k: v for k, v in current.items() if k not in ("metadata", "status")}
            if spec_of != old_spec:
                new_meta["generation"] = int(meta.get("generation", 1)) + 1
            if updated != current:
                revision = self._bump()
                new_meta["resourceVersion"] = str(revision)
                self._objects[key].history.append(updated)
                await self._publish(resource, "MODIFIED", updated, revision)
                if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
                    await self._remove(key, orphan=False)
            else:
                updated = current
        if request.subresource == "scale":
            return scale_of(declaration, updated)
        return updated

    async def _delete_request(self, request: rendering.Request) -> Body:
        resource = request.resource
        declaration = self._known(resource)
        key = self._key(request)
        body = request.data if isinstance(request.data, dict) else {}
        policy = request.params.get("propagationPolicy") or body.get("propagationPolicy")
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise _error(404, "NotFound", f"{declaration.plural} {request.name!r} not found")
            current = copy.deepcopy(self._objects[key].raw)
            wanted_uid = (body.get("preconditions") or {}).get("uid")
            if wanted_uid is not None and wanted_uid != current["metadata"].get("uid"):
                raise _error(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {wanted_uid}, UID in object "
                    f"meta: {current['metadata'].get('uid')}",
                )
            if current["metadata"].get("finalizers"):
                if not current["metadata"].get("deletionTimestamp"):
                    current["metadata"]["deletionTimestamp"] = _now()
                    revision = self._bump()
                    current["metadata"]["resourceVersion"] = str(revision)
                    self._objects[key].history.append(current)
                    await self._publish(resource, "MODIFIED", current, revision)
                return current
            return await self._remove(key, orphan=policy == "Orphan")

    async def _remove(self, key: ObjectKey, *, orphan: bool) -> Body:
        """Delete an object now, then its dependents (the garbage collector's job)."""
        resource = key[0]
        last = copy.deepcopy(self._objects[key].raw)
        revision = self._bump()
        last["metadata"]["resourceVersion"] = str(revision)
        self._objects[key].delete()
        await self._publish(resource, "DELETED", last, revision)
        if not orphan:
            await self._collect_dependents(str(last["metadata"].get("uid")))
        return last

    def _live_uids(self) -> set[str]:
        return {
            str(obj.raw["metadata"].get("uid")) for obj in self._objects.values() if not obj.deleted
        }

    def _dangling(self, obj: Mapping[str, Any]) -> bool:
        references = (obj.get("metadata") or {}).get("ownerReferences") or []
        live = self._live_uids()
        return bool(references) and not any(ref.get("uid") in live for ref in references)

    async def _collect_orphan(self, key: ObjectKey) -> None:
        async with self._lock:
            live = key in self._objects and not self._objects[key].deleted
            if live and self._dangling(self._objects[key].raw):
                await self._remove(key, orphan=False)

    async def _collect_dependents(self, owner_uid: str) -> None:
        dependents = []
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            references = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(reference.get("uid") == owner_uid for reference in references):
                dependents.append(key)
        for key in dependents:
            obj = self._objects[key]
            if obj.deleted:
                continue
            current = copy.deepcopy(obj.raw)
            if current["metadata"].get("finalizers"):
                if not current["metadata"].get("deletionTimestamp"):
                    current["metadata"]["deletionTimestamp"] = _now()
                    revision = self._bump()
                    current["metadata"]["resourceVersion"] = str(revision)
                    obj.history.append(current)
                    await self._publish(key[0], "MODIFIED", current, revision)
                continue
            await self._remove(key, orphan=False)

    # --- reads ----------------------------------------------------------------------------

    def _selected(self, request: rendering.Request, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        labels = meta.get("labels") or {}
        if not _label_matches(request.params.get("labelSelector", ""), labels):
            return False
        return _field_matches(request.params.get("fieldSelector", ""), obj)

    def _current(self, request: rendering.Request) -> list[Body]:
        return [
            copy.deepcopy(obj.raw)
            for (resource, _, _), obj in self._objects.items()
            if resource == request.resource and not obj.deleted
            if self._selected(request, obj.raw)
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        declaration = self._known(request.resource)
        async with self._lock:
            items = self._current(request)
            revision = self._revision
        return {
            "apiVersion": declaration.api_version,
            "kind": f"{declaration.kind}List",
            "metadata": {"resourceVersion": str(revision)},
            "items": items,
        }

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        declaration = self._known(request.resource)
        key = self._key(request)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise _error(404, "NotFound", f"{declaration.plural} {request.name!r} not found")
            if request.subresource == "scale" and "scale" in declaration.subresources:
                return scale_of(declaration, self._objects[key].raw)
            return copy.deepcopy(self._objects[key].raw)

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        """kmock's fallback for watches (unused by `_handle`, kept for kmock's own routing)."""
        yield b""  # send the headers now: a quiet watch is still a watch
        async for event in self._watch_events(request):
            yield event

    async def _watch_events(self, request: rendering.Request) -> AsyncIterator[Body]:
        resource = request.resource
        assert resource is not None
        bus = self._buses[resource]
        marker = await bus.mark()  # subscribe first, so nothing falls between replay and live
        try:
            since = request.params.get("resourceVersion", "")
            async with self._lock:
                oldest = self._history[0][0] if self._history else self._revision + 1
                if since.isdigit() and int(since) > 0 and int(since) >= oldest - 1:
                    backlog = [
                        event
                        for revision, res, event in self._history
                        if res == resource and revision > int(since)
                    ]
                else:
                    backlog = [{"type": "ADDED", "object": obj} for obj in self._current(request)]
                replayed_to = self._revision
            for event in backlog:
                if self._selected(request, event["object"]):
                    yield event
            timeout = request.params.get("timeoutSeconds")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + float(timeout) if timeout else None
            stream = bus.stream(since=marker).__aiter__()
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(stream.__anext__(), remaining)
                except (TimeoutError, StopAsyncIteration):
                    return
                if event.get("type") == CLOSE:
                    return
                revision = int(event["object"]["metadata"].get("resourceVersion", 0))
                if revision > replayed_to and self._selected(request, event["object"]):
                    yield event
        finally:
            await bus.unmark(marker)

    async def close_watches(self) -> None:
        """End every open watch stream (before the server stops)."""
        for bus in list(self._buses.values()):
            await bus.put({"type": CLOSE})

    # --- discovery ------------------------------------------------------------------------

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        answer = await super()._serve_version(request)
        if isinstance(answer, dict) and answer.get("groupVersion", "").startswith("/"):
            answer["groupVersion"] = answer["groupVersion"][1:]
        return answer


class EmulatorServer:
    """A ClusterEmulator served over HTTP on 127.0.0.1 from its own thread and event loop."""

    def __init__(self, resources: Iterable[ResourceDecl] = ()) -> None:
        self.emulator = ClusterEmulator()
        for declaration in resources:
            self.emulator.declare(declaration)
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)

    def __enter__(self) -> EmulatorServer:
        self._thread.start()
        if not self._ready.wait(timeout=30) or not self.url:
            raise RuntimeError(f"the emulator did not start: {self._failure!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by __enter__
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            await self.emulator.close_watches()
            await asyncio.sleep(0)

    def requests(self) -> list[rendering.Request]:
        """Every request served so far (for assertions on who called what)."""
        return list(self.emulator._requests)

    def dump(self) -> str:
        """All live objects, for failure messages."""
        rows = [
            f"{resource.plural} {namespace}/{name}"
            for (resource, namespace, name), obj in self.emulator.objects.items()
            if not obj.deleted
        ]
        return json.dumps(sorted(rows), indent=1)
