"""A deterministic, varied set of sentences for parity tests: short and long, punctuation, numbers, unicode."""

from __future__ import annotations

import random

_SUBJECTS = ["Laura", "The committee", "A small dog", "Our new API", "The river", "Dr. Okafor", "Every cell", "Zoë"]
_VERBS = ["explains", "ignores", "measures", "celebrates", "rebuilds", "questions", "sells", "translates"]
_OBJECTS = [
    "the quarterly report",
    "a 3.5% increase in latency",
    "quantum error-correcting codes",
    "naïve Bayes classifiers",
    "the café's opening hours",
    "東京の天気",
    "emoji like 🚀 and ✨",
    "HTTP/2 flow control",
]
_TAILS = ["", ".", "!", "?", " — really.", " (see §4.2).", "; then it rains.", " in 2024, twice."]


def sentences(count: int = 240, *, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = ["Laura is a DJ.", "a", "What is the capital of France?", "1234567890", "¿Qué tal?"]
    while len(out) < count:
        parts = [
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}"
            for _ in range(rng.choice([1, 1, 2, 3, 6, 15, 30]))
        ]
        out.append(" ".join(parts))
    return out
