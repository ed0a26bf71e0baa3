"""A small synthetic task on the tiny random BERT: classes differ by the words they use."""

from __future__ import annotations

import random

from adapterhub.tasks import Example, Label, Task

WORDS = {
    "fruit": ["apple", "pear", "plum", "grape", "melon", "lemon"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "file"],
    "weather": ["rain", "snow", "wind", "storm", "fog", "hail"],
}


def synthetic_task(n_per_class: int = 24, seed: int = 0) -> Task:
    """Three classes; each text is four words of its class. Splits 2:1:1 per class."""
    rng = random.Random(seed)
    labels = tuple(Label(name, f"{name}: {' '.join(words[:3])}") for name, words in WORDS.items())
    examples = []
    for c, (name, words) in enumerate(WORDS.items()):
        for i in range(n_per_class):
            text = " ".join(rng.choice(words) for _ in range(4))
            split = "train" if i < n_per_class // 2 else "validation" if i < 3 * n_per_class // 4 else "test"
            examples.append(Example(f"{name}-{i}", text, c, split))
    return Task("synthetic", "word-class toy task", labels, "generated", "CC0", tuple(examples))
