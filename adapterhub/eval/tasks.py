from adapterhub.tasks import SPLITS, list_tasks, load_task  # noqa: F401  # TEMP shim for app/ (lead removes)
