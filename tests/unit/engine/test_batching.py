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


def test_a_long_anchor_does_not_absorb_short_inputs_as_padding() -> None:
    lengths = [500, 480, 450, 300, 120, 40, 12, 10]
    chosen = plan_batch(lengths, oldest=0, max_tokens=16384, max_size=256, max_padding_ratio=0.25)
    assert sorted(lengths[i] for i in chosen) == [300, 450, 480, 500]  # adding 120 would pad 35%
    real = sum(lengths[i] for i in chosen)
    assert padded_cost([lengths[i] for i in chosen]) <= 1.25 * real


def test_tiny_batches_may_pad_freely() -> None:
    # Under 512 padded tokens per-call overhead dominates: 10 and 40 tokens share a batch (padded 80).
    assert sorted(plan_batch([10, 40], oldest=0, max_tokens=4096, max_size=8)) == [0, 1]


def test_a_gpu_pads_freely_up_to_its_launch_bound_size() -> None:
    # On CUDA a pass of up to ~4k tokens costs what one short text does: 12, 200 and 400 tokens share one pass there
    # (padded 1200), while a CPU keeps them apart (the same batch would be 2x padding).
    lengths = [400, 12, 200]
    assert sorted(plan_batch(lengths, oldest=0, max_tokens=16384, max_size=256)) == [0]
    gpu = plan_batch(lengths, oldest=0, max_tokens=16384, max_size=256, free_padding_tokens=4096)
    assert sorted(gpu) == [0, 1, 2]
