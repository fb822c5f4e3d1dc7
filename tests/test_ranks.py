"""Rank distributions as data."""

from collections import Counter

import pytest

from orchestrator.ranks import RankConfig, assign_ranks, default_choices


def test_paper_groups_follow_fedhello_split():
    ranks = assign_ranks(RankConfig("groups", max_rank=16, mid_rank=4), 100, seed=0)
    assert Counter(ranks) == {1: 33, 4: 33, 16: 34}
    assert ranks[:33] == [1] * 33 and ranks[-1] == 16
    assert sum(ranks) / 100 == pytest.approx(7.09)
    assert Counter(assign_ranks(RankConfig("groups", max_rank=16, mid_rank=8), 50, 0)) == {1: 16, 8: 16, 16: 18}


def test_homogeneous_and_list():
    assert assign_ranks(RankConfig("homogeneous", max_rank=16), 3, 0) == [16, 16, 16]
    assert assign_ranks(RankConfig("homogeneous", max_rank=16, rank=8), 2, 0) == [8, 8]
    assert assign_ranks(RankConfig("list", max_rank=4, ranks=(1, 4, 2)), 3, 0) == [1, 4, 2]


@pytest.mark.parametrize("family, counts", [
    ("uniform", {2: 5, 4: 5, 8: 5, 16: 5}),
    ("heavy_tail_light", {2: 16, 4: 1, 8: 1, 16: 2}),
    ("heavy_tail_strong", {2: 1, 4: 1, 8: 2, 16: 16}),
])
def test_flexlora_families_exact_proportions_seeded(family, counts):
    cfg = RankConfig(family, max_rank=16)
    ranks = assign_ranks(cfg, 20, seed=3)
    assert Counter(ranks) == counts
    assert ranks == assign_ranks(cfg, 20, seed=3)
    assert ranks != assign_ranks(cfg, 20, seed=4)


def test_normal_family_favours_middle_types():
    c = Counter(assign_ranks(RankConfig("normal", max_rank=16, choices=(1, 4, 8, 16)), 100, 0))
    assert c[4] + c[8] > 80 and c[1] < 10 and c[16] < 10


def test_default_choices():
    assert default_choices(16) == (2, 4, 8, 16)
    assert default_choices(4) == (1, 1, 2, 4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(distribution="zipf"), r"ranks.distribution='zipf'.*groups"),
    (dict(max_rank=0), "ranks.max_rank=0"),
    (dict(mid_rank=32), "ranks.mid_rank=32"),
    (dict(distribution="list"), "needs ranks.ranks"),
    (dict(distribution="list", ranks=(1, 0)), r"ranks.ranks has ranks \[0\]"),
    (dict(distribution="list", ranks=(1, 17)), r"ranks.ranks has ranks \[17\]"),
    (dict(distribution="uniform", choices=(1, 2)), "4 rank types"),
])
def test_bad_rank_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RankConfig(**kwargs)


def test_list_length_must_match_clients():
    with pytest.raises(ValueError, match="3 entries but there are 4 clients"):
        assign_ranks(RankConfig("list", max_rank=4, ranks=(1, 2, 3)), 4, 0)
