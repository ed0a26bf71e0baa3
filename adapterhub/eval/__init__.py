"""Evaluation bed: scoring under the similarity and head protocols, the example library, and the
merge-quality table (``adapterhub.eval.quality``). Task definitions live in ``adapterhub.tasks``."""

from adapterhub.eval.evaluate import (
    EvalResult,
    embed_texts,
    evaluate,
    fit_head,
    head_only,
    relative_scores,
    score,
    split_scorer,
)
from adapterhub.eval.library import LibraryNotFoundError, find_library, load_library

__all__ = [
    "EvalResult",
    "LibraryNotFoundError",
    "embed_texts",
    "evaluate",
    "find_library",
    "fit_head",
    "head_only",
    "load_library",
    "relative_scores",
    "score",
    "split_scorer",
]
