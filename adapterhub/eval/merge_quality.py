from adapterhub.eval.quality import default_plan, quick_plan, run_merge_quality  # noqa: F401  # TEMP shim for app/ (lead removes)
from adapterhub.threads import torch_threads  # noqa: F401  # TEMP shim for app/ (lead removes)
