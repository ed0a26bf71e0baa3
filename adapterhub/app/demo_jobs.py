"""The demo's jobs section: a batch of merges run as a job, as a server or a Ray cluster runs them.

The job is a catalog row (``app/jobs``): it is queued, claimed by compare-and-set, reports
progress per merge and stores each result with its lineage in one transaction. Here it runs on the
local backend (a thread of this process); with ``ADAPTERHUB_RAY_ADDRESS`` set the same call sends
it to a Ray cluster (``docs/jobs.md``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from adapterhub.app.hub import AdapterHub

JOB_K = 8


def jobs_section(hub: AdapterHub, names: Sequence[str], say: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Submit two LoRA-LEGO merges (of the first and the last three adapters) as one job and follow it."""
    merges = [
        {"names": list(names[:3]), "method": "lego", "k": JOB_K, "name": "demo/job-lego-first3", "force": True},
        {"names": list(names[-3:]), "method": "lego", "k": JOB_K, "name": "demo/job-lego-last3", "force": True},
    ]
    started = time.perf_counter()
    job = hub.jobs.submit("merge_batch", {"merges": merges})
    job = hub.jobs.wait(job.id, timeout=600)
    seconds = time.perf_counter() - started
    stored = [m["name"] for m in merges if hub.catalog.exists(m["name"])]
    parents = {name: sorted(p.parent_name for p in hub.catalog.lineage(name)) for name in stored}
    section = {"job": job.id, "status": job.status, "attempts": job.attempts, "backend": hub.jobs.backend.name,
               "progress": job.progress, "stored": stored, "parents": parents, "seconds": round(seconds, 1)}
    say(f"jobs: a batch of {len(merges)} merges ran as job {job.id[:8]} on the {section['backend']} backend: "
        f"{job.status} after {job.attempts} attempt(s) in {seconds:.1f} s; stored {', '.join(stored)} with lineage")
    return section
