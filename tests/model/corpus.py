"""The fidelity corpus: 500+ varied sentences and a small query/passage retrieval set, deterministic.

Every backend x dtype is judged on these against torch fp32 (``tests/model/test_fidelity.py``); docs/performance.md
quotes the figures they give.
"""

from __future__ import annotations

import random

from tests.model.sentences import sentences

_TOPICS = [
    "photosynthesis in desert plants",
    "the 1969 Apollo landing",
    "Kubernetes pod eviction",
    "sourdough starter hydration",
    "Byzantine fault tolerance",
    "the Treaty of Westphalia",
    "lithium-ion battery degradation",
    "jazz improvisation over ii-V-I",
    "coral reef bleaching",
    "GDPR data-subject requests",
    "Rust's borrow checker",
    "marathon tapering",
    "the Krebs cycle",
    "index funds vs. active management",
    "Gothic cathedral buttresses",
    "CRISPR off-target effects",
]
_FRAMES = [
    "What is {t}?",
    "Explain {t} to a ten-year-old.",
    "A short history of {t}.",
    "Why does {t} matter for engineers?",
    "{T}: common misconceptions and how to avoid them.",
    "I read three papers on {t} last week and none of them agreed on the basics.",
    "how 2 fix problems w/ {t} ??",
    "{T} — see https://example.org/wiki/{slug} for details.",
    "NOTES ON {U}",
    "Q: is {t} overrated? A: depends on who you ask.",
]
_CODE = [
    "def add(a, b):\n    return a + b",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "for (let i = 0; i < n; i++) { sum += xs[i]; }",
    'curl -H "Authorization: Bearer $KEY" https://api.example.com/v1/embeddings',
    '{"input": ["a", "b"], "model": "BAAI/bge-large-en-v1.5"}',
]
_EXTRA = [
    "",
    " ",
    "?",
    "OK",
    "e = mc^2",
    "3.14159265358979323846264338327950288419716939937510",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "The the the the the the the the the the the the the the the the.",
    "naïve café résumé coöperate façade",
    "Ελληνικά, русский, العربية, हिन्दी, 한국어, 中文",
    "🙂🙃😉😊😇🥰😍🤩",
    "\t tabs\tand  double  spaces \n and newlines\n",
]


def varied_sentences(count: int = 520, *, seed: int = 1) -> list[str]:
    """Short and long, prose, questions, code, numbers, unicode and near-empty strings, with no duplicates."""
    rng = random.Random(seed)
    out: list[str] = list(_EXTRA) + list(_CODE)
    for topic in _TOPICS:
        for frame in _FRAMES:
            slug = topic.replace(" ", "_")
            out.append(frame.format(t=topic, T=topic[0].upper() + topic[1:], U=topic.upper(), slug=slug))
    # Long passages (100-400 tokens) built from the shorter ones: the length regime where error accumulates.
    pool = sentences(400, seed=seed)
    while len(out) < count - 60:
        out.append(pool[len(out) % len(pool)])
    while len(out) < count:
        out.append(" ".join(rng.sample(out[20:200], rng.randint(8, 25))))
    unique = list(dict.fromkeys(out))
    extra = 0
    while len(unique) < count:
        unique.append(f"{pool[extra % len(pool)]} ({extra})")
        extra += 1
    return unique[:count]


# Each query has one relevant passage (same index); the other passages are plausible distractors on nearby topics.
RETRIEVAL_QUERIES = [
    "how do plants survive with little water",
    "who first walked on the moon",
    "why was my kubernetes pod evicted",
    "how wet should a sourdough starter be",
    "consensus when some nodes lie",
    "what ended the thirty years war",
    "why do phone batteries lose capacity",
    "what scale to play over a two-five-one",
    "why are coral reefs turning white",
    "how long do I have to answer a GDPR access request",
    "what does the rust borrow checker prevent",
    "how much should I run the week before a marathon",
    "where is ATP made in the citric acid cycle",
    "are index funds better than stock picking",
    "why do cathedrals have flying buttresses",
    "can CRISPR cut the wrong gene",
]
RETRIEVAL_PASSAGES = [
    "Cacti and succulents use CAM photosynthesis, opening their stomata at night to limit water loss.",
    "Neil Armstrong stepped onto the lunar surface on 20 July 1969, followed by Buzz Aldrin.",
    "The kubelet evicts pods when a node runs low on memory or disk, starting with BestEffort pods.",
    "Most bakers keep a starter at 100% hydration: equal weights of flour and water.",
    "Byzantine fault tolerant protocols reach agreement as long as fewer than a third of the replicas are faulty.",
    "The Peace of Westphalia in 1648 ended the Thirty Years' War and shaped the idea of state sovereignty.",
    "Lithium-ion cells degrade through SEI growth and lithium plating, faster when kept hot or fully charged.",
    "Over a ii-V-I, players often use the Dorian, Mixolydian and Ionian modes, or bebop scales with passing tones.",
    "When water is too warm, corals expel the algae living in their tissue and turn white.",
    "Under the GDPR a controller must respond to a subject access request within one month.",
    "Rust's borrow checker rejects programs with data races and dangling references at compile time.",
    "A typical taper cuts weekly mileage by 40 to 60 percent in the final week before race day.",
    "The citric acid cycle produces GTP or ATP directly at the succinyl-CoA synthetase step.",
    "Over long horizons most actively managed funds underperform low-cost index funds after fees.",
    "Flying buttresses carry the outward thrust of tall vaulted roofs, letting walls hold large windows.",
    "Off-target edits happen when the guide RNA tolerates mismatches and Cas9 cuts a similar sequence.",
]
