from __future__ import annotations

import pytest

from embedserve.accounting.pricing import price
from embedserve.settings import Settings


@pytest.mark.parametrize(
    ("tokens", "per_1k", "credits"),
    [
        (7, 1.0, 1),  # the seed: "Laura is a DJ." is 7 tokens and costs 1 credit
        (0, 1.0, 0),
        (1, 1.0, 1),
        (1000, 1.0, 1),
        (1001, 1.0, 2),
        (2500, 2.0, 5),
        (10, 0.0, 0),
        (300, 10.0, 3),
        (301, 10.0, 4),
    ],
)
def test_price_rounds_up_per_request(tokens: int, per_1k: float, credits: int) -> None:
    assert price(tokens, credits_per_1k_tokens=per_1k) == credits


def test_default_price_makes_a_seven_token_call_cost_one_credit() -> None:
    assert price(7, credits_per_1k_tokens=Settings().credits_per_1k_tokens) == 1
