"""Merge quality: how much of each task adapter a merged adapter keeps, beside the zero-shot baseline.

For fixed subsets of the task library (a few pairs, a few groups of four, all tasks), every merge
method of a plan is run at every rank ``k`` and the merged adapter is scored on each of its tasks;
every figure stands beside the base model alone and each task's own adapter, measured on the same
examples. One module per job:

* ``plan``: the rows (``MergeSpec``), the plan, ``default_plan``/``quick_plan``; weight
  conventions and which methods take a seed come from the merge registry;
* ``sampling``: the fixed task subsets and the stratified cap on a split;
* ``runner``: ``run_merge_quality`` and ``select_conventions`` (merging and scoring);
* ``stats``: relative scores, standard errors, the tie rule;
* ``report``: ``QualityReport`` (cells, rows, paired comparisons, the JSON form);
* ``markdown``, ``plot``, ``writing``: render a report dict as Markdown, PNG and files.

Example:
    >>> report = run_merge_quality(adapters, tasks, model=model, plan=quick_plan())  # doctest: +SKIP
    >>> report.write("docs/")  # doctest: +SKIP
"""

from adapterhub.eval.quality.markdown import render_markdown
from adapterhub.eval.quality.plan import (
    DEFAULT_KS,
    DEFAULT_SEEDS,
    SELECTION_METHODS,
    MergeSpec,
    QualityPlan,
    baseline_specs,
    default_plan,
    lego_defaults,
    lego_specs,
    quick_plan,
)
from adapterhub.eval.quality.plot import plot_report, plot_task_accuracy
from adapterhub.eval.quality.report import Cell, QualityReport, Reference, Row, Scored
from adapterhub.eval.quality.runner import run_merge_quality, select_conventions
from adapterhub.eval.quality.sampling import cap_split, fixed_subsets, groups_of
from adapterhub.eval.quality.stats import TIE_SIGMAS, reference_rows, relative
from adapterhub.eval.quality.writing import NOTES_MARKER, write_report

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_SEEDS",
    "NOTES_MARKER",
    "SELECTION_METHODS",
    "TIE_SIGMAS",
    "Cell",
    "MergeSpec",
    "QualityPlan",
    "QualityReport",
    "Reference",
    "Row",
    "Scored",
    "baseline_specs",
    "cap_split",
    "default_plan",
    "fixed_subsets",
    "groups_of",
    "lego_defaults",
    "lego_specs",
    "plot_report",
    "plot_task_accuracy",
    "quick_plan",
    "reference_rows",
    "relative",
    "render_markdown",
    "run_merge_quality",
    "select_conventions",
    "write_report",
]
