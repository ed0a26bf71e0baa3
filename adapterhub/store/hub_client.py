"""The ``huggingface_hub`` client side of hub sync (``AdapterHub.push``/``pull``).

:class:`HubClient` wraps ``HfApi`` and ``snapshot_download`` with the endpoint, token and offline
mode read from ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` at call time (the library reads
them once, at import), and turns every ``huggingface_hub`` error into a ``HubError``/``AuthError``
whose message says what to do. ``huggingface_hub`` itself is imported only when a request is made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapterhub.errors import AdapterHubError, AuthError, HubError
from adapterhub.lora import CONFIG_NAME, README_NAME, WEIGHTS_NAME
from adapterhub.settings import env_flag

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["HubClient", "RemoteRevision"]


@dataclass(frozen=True, slots=True)
class RemoteRevision:
    """A resolved revision of a remote repo: its commit id and what its files should hash to."""

    repo_id: str
    sha: str
    lfs_sha256: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()


class HubClient:
    """``huggingface_hub`` with settings from the environment at call time and friendly errors.

    Args:
        endpoint: hub URL; default ``HF_ENDPOINT``, else ``https://huggingface.co``.
        token: access token; default ``HF_TOKEN``, else whatever ``huggingface_hub`` finds
            (``hf auth login``).
    """

    def __init__(self, *, endpoint: str | None = None, token: str | None = None) -> None:
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.token = token or os.environ.get("HF_TOKEN") or None
        # Same rule as huggingface_hub: HF_HUB_OFFLINE, else the older TRANSFORMERS_OFFLINE.
        self.offline = env_flag("HF_HUB_OFFLINE", default=env_flag("TRANSFORMERS_OFFLINE"))
        cache = os.environ.get("HF_HUB_CACHE") or (
            str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
        )
        self.cache_dir = cache

    def _api(self) -> HfApi:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)

    @contextmanager
    def _session(self, repo_id: str, revision: str | None) -> Iterator[None]:
        """Apply this client's offline mode to the library and translate its errors."""
        from huggingface_hub import constants

        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = self.offline
        try:
            yield
        except AdapterHubError:
            raise
        except Exception as e:  # noqa: BLE001 - every library error is translated or re-raised
            translated = self._translate(e, repo_id, revision)
            if translated is None:
                raise
            raise translated from e
        finally:
            constants.HF_HUB_OFFLINE = saved

    def _translate(self, e: Exception, repo_id: str, revision: str | None) -> AdapterHubError | None:
        """One place where ``huggingface_hub`` errors become adapterhub errors with a next step."""
        from huggingface_hub import errors as hf

        try:  # huggingface_hub 1.x+ speaks httpx2; older releases used requests
            import httpx2

            unreachable: tuple[type[BaseException], ...] = (httpx2.ConnectError, httpx2.TimeoutException)
        except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
            unreachable = (ConnectionError, TimeoutError)
        entry_missing = getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)

        where = f"'{repo_id}'" + (f" at revision '{revision}'" if revision else "") + f" on {self.endpoint}"
        server_message = getattr(e, "server_message", None)
        detail = f" (server said: {server_message})" if server_message else ""
        if isinstance(e, hf.GatedRepoError):
            return AuthError(
                f"{where} is gated: accept its conditions on the repo's page, then set HF_TOKEN to a token of "
                "that account (or pass --token)"
            )
        if isinstance(e, hf.RevisionNotFoundError):
            return HubError(f"{where}: no such revision; check the branch, tag or commit id (default 'main')")
        if isinstance(e, hf.RepositoryNotFoundError):
            return HubError(
                f"repository {where} not found, or it is private and the token cannot see it; check the repo id "
                "and HF_ENDPOINT, and set HF_TOKEN (or --token) for private repos"
            )
        if isinstance(e, entry_missing):
            return HubError(f"{where}: a needed file is missing{detail}; is this a PEFT LoRA adapter repo?")
        if isinstance(e, (hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)):
            return HubError(
                f"offline (HF_HUB_OFFLINE is set) and {where} is not in the local cache; unset HF_HUB_OFFLINE "
                "to download it, or pull a revision that was downloaded before"
            )
        if isinstance(e, hf.HfHubHTTPError):
            status = e.response.status_code if e.response is not None else None
            if status in (401, 403):
                return AuthError(
                    f"the hub refused the request for {where} (HTTP {status}){detail}; set HF_TOKEN or pass --token "
                    "with a token allowed to do this (`adapterhub token create` on an adapterhub server)"
                )
            return HubError(f"hub request for {where} failed with HTTP {status}{detail}")
        if isinstance(e, unreachable):
            return HubError(f"cannot reach {self.endpoint} ({e}); check HF_ENDPOINT and the network")
        if isinstance(e, ValueError) and README_NAME in str(e):
            return HubError(f"the hub refused the model card of {where}: {e}")
        return None

    # -- push ------------------------------------------------------------------------------------

    def push_folder(
        self,
        folder: Path,
        repo_id: str,
        *,
        revision: str = "main",
        private: bool = False,
        commit_message: str,
    ) -> tuple[str, str]:
        """Create the repo if needed and upload ``folder`` as one commit; returns (commit id, url).

        Raises:
            HubError, AuthError: see ``_translate``.
        """
        if self.offline:
            raise HubError("cannot push while offline: HF_HUB_OFFLINE is set; unset it to push")
        with self._session(repo_id, revision):
            api = self._api()
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), revision=revision, commit_message=commit_message
            )
        return info.oid, str(url)

    # -- pull ------------------------------------------------------------------------------------

    def resolve(self, repo_id: str, revision: str | None = None) -> RemoteRevision:
        """The commit id a revision points to now (offline: the cached snapshot's).

        Raises:
            HubError, AuthError: not found, unauthorised, gated, offline and not cached.
        """
        if self.offline:
            folder = self.download(repo_id, revision or "main")
            return RemoteRevision(repo_id, folder.name)
        with self._session(repo_id, revision):
            info = self._api().model_info(repo_id, revision=revision, files_metadata=True)
        if not info.sha:
            raise HubError(f"the hub did not return a commit id for '{repo_id}'; is {self.endpoint} a hub endpoint?")
        lfs = {s.rfilename: s.lfs.sha256 for s in (info.siblings or []) if s.lfs is not None}
        return RemoteRevision(repo_id, info.sha, lfs, tuple(s.rfilename for s in info.siblings or []))

    def download(
        self, repo_id: str, revision: str, *, commit: str | None = None, extra: Sequence[str] = ()
    ) -> Path:
        """Download (or find in the cache) an adapter's files at ``revision``; returns the folder.

        Only ``adapter_config.json``, ``adapter_model.safetensors``, ``README.md`` and the small
        ``extra`` files (each optional) are fetched: a pickled ``adapter_model.bin`` is never
        downloaded, let alone loaded.

        Online, the weights are downloaded by the name asked for (so the cache records that ref
        for offline pulls later), and the two small files at the same time, pinned to ``commit``
        (what ``resolve`` said ``revision`` is): one request fewer than ``snapshot_download``
        (which lists the repo first) and no waiting on the small files. If the head moved in
        between, the small files are fetched again at the commit the weights came from, so the
        folder always holds one commit's files. Offline, ``snapshot_download`` finds the cached
        snapshot through that ref.
        """
        with self._session(repo_id, revision):
            if self.offline:
                folder = self._snapshot(repo_id, revision, extra)
            else:
                folder = self._fetch(repo_id, revision, commit, extra)
        if not (folder / WEIGHTS_NAME).is_file():
            raise HubError(
                f"'{repo_id}' has no {WEIGHTS_NAME}; adapterhub imports safetensors weights only and never "
                "loads pickled adapter_model.bin files — convert the adapter to safetensors and push it again"
            )
        if not (folder / CONFIG_NAME).is_file():
            raise HubError(f"'{repo_id}' has no {CONFIG_NAME}; is it a PEFT adapter repo?")
        return folder

    def _snapshot(self, repo_id: str, revision: str, extra: Sequence[str] = ()) -> Path:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo_id,
            revision=revision,
            endpoint=self.endpoint,
            token=self.token,
            cache_dir=self.cache_dir,
            local_files_only=self.offline,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, README_NAME, *extra],
        )
        return Path(path)

    def _fetch(self, repo_id: str, revision: str, commit: str | None, extra: Sequence[str] = ()) -> Path:
        """The weights at ``revision`` and, alongside, the small files at ``commit``; see ``download``."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hf

        missing = getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError)

        def get(filename: str, at: str) -> None:
            try:
                hf_hub_download(
                    repo_id, filename, revision=at, endpoint=self.endpoint, token=self.token, cache_dir=self.cache_dir
                )
            except missing:
                pass  # a repo without a card, or without a config (reported by ``download``)

        small = (CONFIG_NAME, README_NAME, *extra)
        with ThreadPoolExecutor(max_workers=len(small), thread_name_prefix="hub-small") as pool:
            early = [pool.submit(get, name, commit) for name in small] if commit else []
            try:
                weights = hf_hub_download(
                    repo_id, WEIGHTS_NAME, revision=revision, endpoint=self.endpoint, token=self.token,
                    cache_dir=self.cache_dir,
                )
            except missing:
                return self._snapshot(repo_id, revision, extra)  # no weights: let ``download`` say so
            for future in early:
                future.result()
        folder = Path(weights).parent
        if folder.name != commit:  # no commit given, or the head moved since ``resolve``
            for name in small:
                get(name, folder.name)
        return folder
