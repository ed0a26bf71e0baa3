"""Push catalog entries to a hub and pull hub repos into the catalog, through ``huggingface_hub``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from adapterhub.app.cards import card_description, card_metrics, read_card
from adapterhub.app.core import HubCore
from adapterhub.app.examples import EXAMPLES_FILE
from adapterhub.app.ingest import examples_files, export, received_weights, store_new, store_revision
from adapterhub.errors import AdapterExistsError
from adapterhub.hubformat import README_NAME, render_card
from adapterhub.lora import CONFIG_NAME, WEIGHTS_NAME, AdapterConfig
from adapterhub.names import validate_name
from adapterhub.store import AdapterRecord
from adapterhub.store.hub_client import HubClient


def push(
    core: HubCore,
    name: str,
    repo_id: str | None = None,
    *,
    revision: str = "main",
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> dict[str, Any]:
    """Upload ``name`` to a hub repo as a PEFT folder with a model card (one commit).

    The repo is created if needed. Endpoint and token default to ``HF_ENDPOINT``/``HF_TOKEN``.

    Returns:
        ``{"name", "repo_id", "revision" (the commit id), "url", "digest"}``.

    Raises:
        AdapterNotFoundError, InvalidNameError, HubError, AuthError.
    """
    repo_id = validate_name(repo_id or name)
    record = core.catalog.get(name)
    card = render_card(record, core.catalog.lineage(name), core.catalog.metrics(name), repo_id=repo_id)
    client = HubClient(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix=".push-", dir=core.settings.home) as tmp:
        export(core, name, tmp, force=True)
        (Path(tmp) / README_NAME).write_text(card, encoding="utf-8")
        sha, url = client.push_folder(
            Path(tmp),
            repo_id,
            revision=revision,
            private=private,
            commit_message=commit_message or f"adapterhub push {name} (revision {record.revision[:12]})",
        )
    return {"name": name, "repo_id": repo_id, "revision": sha, "url": url, "digest": record.digest}


def _has_revision(core: HubCore, name: str, source_revision: str) -> bool:
    return any(r.source_revision == source_revision for r in core.catalog.revisions(name))


def pull(
    core: HubCore,
    repo_id: str,
    *,
    revision: str | None = None,
    name: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> AdapterRecord:
    """Download a PEFT adapter from a hub repo, validate it and import it (with its lineage).

    The repo id and commit id are recorded as ``source_repo``/``source_revision``. Pulling a
    commit that is already a revision of the entry changes nothing; a new commit of the same
    repo becomes a new revision of the entry (its head moves). Weights, card metadata and metrics
    go in together, in one catalog transaction.

    Raises:
        HubError, AuthError: not found, unauthorised, gated, offline and not cached.
        InvalidAdapterError, UnsupportedAdapterError: the files are not a valid LoRA adapter.
        AdapterExistsError: ``name`` exists and was not pulled from ``repo_id``.
    """
    name = validate_name(name or repo_id)
    client = HubClient(endpoint=endpoint, token=token)
    remote = client.resolve(repo_id, revision)
    existing = core.catalog.get(name) if core.catalog.exists(name) else None
    if existing is not None:
        if existing.source_repo != repo_id:
            raise AdapterExistsError(name)
        if _has_revision(core, name, remote.sha):
            return existing
    # Download by the name asked for (so the cache records that ref for offline pulls later);
    # if the head moved since `resolve`, describe the commit that was actually downloaded.
    folder = client.download(repo_id, revision or "main", commit=remote.sha, extra=[EXAMPLES_FILE])
    if folder.name != remote.sha and not client.offline:
        remote = client.resolve(repo_id, folder.name)
        if existing is not None and _has_revision(core, name, remote.sha):
            return existing
    from adapterhub.lora import LoraAdapter

    # Structure from the header only; values, the file's sha256 (the hub's LFS oid) and the
    # canonical digest come from one read of the file, which also stores it (linked when it is
    # already canonical), before the card is read and the rows are written.
    adapter = LoraAdapter.from_files(AdapterConfig.load(folder / CONFIG_NAME), folder / WEIGHTS_NAME, validate=False)
    with received_weights(
        core,
        adapter,
        folder / WEIGHTS_NAME,
        expected_sha256=remote.lfs_sha256.get(WEIGHTS_NAME),
        what=f"{WEIGHTS_NAME} of {repo_id}@{remote.sha[:12]}",
    ) as weights:
        card = read_card(folder / README_NAME, adapter, file_sha256=weights.file_sha256)
        files = examples_files(folder, None)  # the adapter's example inputs, if the repo has them
        if existing is None:
            return store_new(
                core,
                adapter,
                name,
                about=card_description(card),
                lineage=card.lineage,
                metrics=card_metrics(card),
                files=files,
                weights=weights,
                operation="pull",
                source=repo_id,
                source_repo=repo_id,
                source_revision=remote.sha,
            )
        store_revision(
            core,
            name,
            adapter,
            message=f"pull {repo_id}@{remote.sha}",
            about=card_description(card) if card.has_adapterhub_section else None,
            files=files,
            weights=weights,
            source_revision=remote.sha,
            source_repo=repo_id,
        )
    return core.catalog.get(name)
