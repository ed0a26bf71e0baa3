"""The application layer: ``AdapterHub`` (the facade the CLI and the server call) and workflows.

``AdapterHub`` lives in ``hub.py``; each capability is a service module beside it (``ingest``,
``merging``, ``sync``, ``repos``, ``tokens``, ``evaluation``). ``run_demo`` and ``merge_quality``
are plain functions that make and use a hub; they load on first use, so that importing the facade
stays cheap for catalog commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adapterhub.app.hub import AdapterHub
from adapterhub.app.merging import MergeOutcome

if TYPE_CHECKING:
    from adapterhub.app.demo import run_demo
    from adapterhub.app.quality import merge_quality

__all__ = ["AdapterHub", "MergeOutcome", "merge_quality", "run_demo"]


def __getattr__(name: str) -> Any:
    if name == "run_demo":
        from adapterhub.app.demo import run_demo

        return run_demo
    if name == "merge_quality":
        from adapterhub.app.quality import merge_quality

        return merge_quality
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
