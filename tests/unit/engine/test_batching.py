"""Batch planning: the token budget holds, lengths cluster, and the oldest input always goes next."""

from __future__ import annotations

import random

import pytest

from embedserve.engine.batching import padded_cost, plan_batch


@pytest.mark.parametrize("seed", range(20))
def test_budget_and_size_respected_and_oldest_included(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(3, 512) for _ in range(rng.randint(1, 300))]
    oldest = rng.randrange(len(lengths))
    chosen = plan_batch(lengths, oldest=oldest, max_tokens=4096, max_size=64)
    assert oldest in chosen
    assert len(set(chosen)) == len(chosen) <= 64
    # A single input always fits (512 <= budget); more only while padded cost stays in budget.
    assert padded_cost([lengths[i] for i in chosen]) <= 4096


def test_lengths_are_clustered_to_cut_padding() -> None:
    lengths = [10, 500, 12, 490, 11, 505, 9, 495]
    chosen = plan_batch(lengths, oldest=0, max_tokens=48, max_size=8)
    assert sorted(lengths[i] for i in chosen) == [9, 10, 11, 12]
    long = plan_batch(lengths, oldest=1, max_tokens=2100, max_size=8)
    assert sorted(lengths[i] for i in long) == [490, 495, 500, 505]


def test_long_input_is_not_starved_by_short_ones() -> None:
    # The long input is the oldest: it goes in the very next batch although short ones would pack better.
    lengths = [500] + [8] * 200
    assert 0 in plan_batch(lengths, oldest=0, max_tokens=1024, max_size=256)


def test_batch_grows_to_size_cap_when_budget_allows() -> None:
    assert len(plan_batch([5] * 100, oldest=0, max_tokens=10_000, max_size=32)) == 32
