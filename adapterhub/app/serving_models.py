"""The models ``adapterhub serve`` can answer with, as OpenAI model objects (``GET /v1/models``).

``base``, ``auto`` and ``mixture`` (``serving.SPECIAL_MODELS``), each registered base by its short
name, and every catalog adapter on a registered base that the caller's token may read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from adapterhub.app.serving import SPECIAL_MODELS

if TYPE_CHECKING:
    from adapterhub.app.core import HubCore
    from adapterhub.store import TokenRecord

__all__ = ["model_info", "servable_models"]


def servable_models(core: HubCore, token: TokenRecord | None) -> list[dict[str, Any]]:
    """OpenAI model objects: the special models, the bases and every readable adapter on a served base."""
    from adapterhub.app.access import readable
    from adapterhub.models.bases import find_base

    created = int(time.time())
    out = servable_models_special()
    for record in readable(core, token, core.catalog.list(), lambda r: r.name):
        spec = find_base(record.base_model)
        if spec is None:
            continue
        out.append(_adapter_model(record, spec, created))
    return out


def servable_models_special() -> list[dict[str, Any]]:
    """The model objects that are not catalog adapters: base, auto, mixture and each registered base."""
    from adapterhub.models.bases import BASE_NAMES, get_base

    created = int(time.time())
    out: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "adapterhub", "kind": "special"}
        for name in SPECIAL_MODELS
    ]
    for name in BASE_NAMES:
        spec = get_base(name)
        out.append({"id": name, "object": "model", "created": created, "owned_by": "adapterhub", "kind": "base",
                    "base_model": spec.model_id, "base_kind": spec.kind})
    return out


def _adapter_model(record: Any, spec: Any, created: int) -> dict[str, Any]:
    stamp = int(record.created.timestamp()) if record.created else created
    return {"id": record.name, "object": "model", "created": stamp, "owned_by": record.name.split("/")[0],
            "kind": "adapter", "base_model": spec.model_id, "base_kind": spec.kind, "task": record.task}


def model_info(core: HubCore, token: TokenRecord | None, model: str) -> dict[str, Any]:
    """One model object (``GET /v1/models/{id}``).

    Raises:
        RepoNotFoundError: unknown, unreadable with this token, or on a base this server does not serve.
    """
    from adapterhub.app.access import authorize_read
    from adapterhub.errors import RepoNotFoundError
    from adapterhub.models.bases import BASE_NAMES, find_base

    if model in SPECIAL_MODELS or model in BASE_NAMES:
        return next(m for m in servable_models_special() if m["id"] == model)
    authorize_read(core, token, model)
    record = core.catalog.get(model)
    spec = find_base(record.base_model)
    if spec is None:
        raise RepoNotFoundError(model)
    return _adapter_model(record, spec, int(time.time()))
