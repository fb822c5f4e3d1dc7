"""Noise, similarity and byte metrics on hand-computed cases and on the methods' stated properties."""

import pytest
import torch
from method_helpers import make, random_state, run_rounds, trained

from core.wire import ClientUpdate, ModuleSpec
from orchestrator.metrics import (
    aggregation_noise,
    fedplora_rankwise_noise,
    init_noise_function,
    init_noise_param,
    module_cosine_similarity,
    noise_metrics,
    round_bytes,
)

ONE = [ModuleSpec("q", 1, 1)]


def _scalar_round(name, pairs, ranks=None, **cfg):
    """One round on a 1x1 module where client i ends with (B, A) = pairs[i]."""
    m = make(name, ranks or [1] * len(pairs), R=1, modules=ONE, **cfg)
    state = m.init_global()
    starts = [m.client_start(state, c, 0) for c in range(len(pairs))]
    updates = [ClientUpdate(c, 0, {"main": {"q": (torch.tensor([[b]]), torch.tensor([[a]]))}}, 1, 0.0)
               for c, (b, a) in enumerate(pairs)]
    agg = m.aggregate(state, starts, updates)
    return m, starts, updates, agg


def test_fedit_aggregation_noise_hand_case():
    # (B, A) = (2, 1) and (4, 3): ideal mean of products = (2 + 12) / 2 = 7; FedIT gives 3 * 2 = 6
    m, starts, updates, agg = _scalar_round("fedit", [(2.0, 1.0), (4.0, 3.0)], weighting="uniform")
    assert aggregation_noise(m.global_delta(agg.state), starts, updates, agg.weights) == pytest.approx(1.0)


def test_hetlora_aggregation_noise_uses_the_pruned_adapters_the_server_aggregated():
    # one 1x1 module, R = 2, global B = [1, 1], A = [1; 1]; client 0's tail shrank (1 -> 0.5): pruned to rank 1
    m = make("hetlora", [2, 2], R=2, modules=ONE, weighting="uniform")
    state = m.init_global()
    state.tensors["q/B"], state.tensors["q/A"] = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0], [1.0]])
    starts = [m.client_start(state, c, 0) for c in (0, 1)]
    A = torch.tensor([[1.0], [1.0]])
    updates = [ClientUpdate(0, 0, {"main": {"q": (torch.tensor([[2.0, 0.5]]), A)}}, 1, 0.0),
               ClientUpdate(1, 0, {"main": {"q": (torch.tensor([[1.0, 2.0]]), A.clone())}}, 1, 0.0)]
    agg = m.aggregate(state, starts, updates)
    assert agg.state.meta["ranks"] == {"0": 1, "1": 2}
    assert [tuple(u.adapters["main"]["q"][0].shape) for u in agg.used] == [(1, 1), (1, 2)]
    # server: B = [1.5, 1], A = [1; 0.5] -> 2.0; effective client deltas 2 and 3 -> ideal 2.5
    assert noise_metrics(m, state, starts, agg)["agg_noise"] == pytest.approx(0.5)
    # measured on the full uploads (2.5 and 3) it would be 0.75
    assert aggregation_noise(m.global_delta(agg.state), starts, updates, agg.weights) == pytest.approx(0.75)


def test_flora_aggregation_noise_is_zero_and_fedit_is_not():
    flora = make("flora", [1, 2, 4], R=4)
    _, (_, starts, updates, agg) = run_rounds(flora, [[0, 1, 2], [0, 1, 2]])
    assert aggregation_noise(flora.global_delta(agg.state), starts, updates, agg.weights) < 1e-5
    fedit = make("fedit", [4, 4], R=4)
    _, (_, starts, updates, agg) = run_rounds(fedit, [[0, 1]])
    assert aggregation_noise(fedit.global_delta(agg.state), starts, updates, agg.weights) > 1e-3


def test_flexlora_aggregation_noise_zero_for_dense_global():
    m = make("flexlora", [1, 2, 4], R=4)
    _, (_, starts, updates, agg) = run_rounds(m, [[0, 1, 2], [1, 2]])
    assert aggregation_noise(m.global_delta(agg.state), starts, updates, agg.weights) < 1e-5


@pytest.mark.parametrize("selection", ["random", "fixed", "weight_norm"])
def test_fedplora_initialization_noise_is_zero(selection):
    m = make("fedplora", [1, 2, 4], R=4, selection=selection)
    state = random_state(m)
    glob, factors = m.global_delta(state), m.global_factors(state)
    for c in range(3):
        start = m.client_start(state, c, 1)
        assert init_noise_function(glob, start) < 1e-6
        assert init_noise_param(factors, start) == 0.0


def test_drop_and_truncation_have_init_noise_equal_to_the_missing_part():
    R = 4
    m = make("hetlora", [1], R=R, modules=[ModuleSpec("q", 1, 1)], hetlora_prune=False)
    state = m.init_global()
    state.tensors["q/B"] = torch.tensor([[1.0, 2.0, 0.0, 0.0]])
    state.tensors["q/A"] = torch.tensor([[3.0], [4.0], [0.0], [0.0]])
    start = m.client_start(state, 0, 0)
    # function: global 1*3 + 2*4 = 11, client 3 -> 8; parameters: ||A tail|| + ||B tail|| = 4 + 2
    assert init_noise_function(m.global_delta(state), start) == pytest.approx(8.0)
    assert init_noise_param(m.global_factors(state), start) == pytest.approx(6.0)
    drop = make("fedplora", [1], R=R, modules=[ModuleSpec("q", 1, 1)], unselected="drop", selection="fixed")
    assert init_noise_function(drop.global_delta(state), drop.client_start(state, 0, 0)) == pytest.approx(8.0)


def test_flora_param_init_noise_counts_lost_global_factors_and_fresh_init():
    m = make("flora", [1, 1], R=1, modules=[ModuleSpec("q", 1, 1)])
    _, (_, starts, updates, agg) = run_rounds(m, [[0, 1]])
    start = m.client_start(agg.state, 0, 1)
    Bs, As = m.global_factors(agg.state)["q"]
    fresh_A = start.adapters["main"]["q"].A
    expected = float(torch.sqrt(As.norm() ** 2 + fresh_A.norm() ** 2) + Bs.norm())
    assert init_noise_param(m.global_factors(agg.state), start) == pytest.approx(expected)
    assert init_noise_function(m.global_delta(agg.state), start) < 1e-6  # fresh B = 0: same function


def test_fedplora_rankwise_noise_counterexample_of_paper_bound():
    # the reference notes' counterexample: (A, B) = (3, 3) and (-3, -3) -> covariance term 9
    _, starts, updates, _ = _scalar_round("fedplora", [(3.0, 3.0), (-3.0, -3.0)])
    assert fedplora_rankwise_noise(starts, updates) == pytest.approx(9.0)


def test_fedplora_rankwise_equals_effective_noise_when_every_slot_fully_trained():
    m = make("fedplora", [4, 4, 4], R=4)
    _, (_, starts, updates, agg) = run_rounds(m, [[0, 1, 2]])
    a = aggregation_noise(m.global_delta(agg.state), starts, updates, agg.weights)
    assert a == pytest.approx(fedplora_rankwise_noise(starts, updates), rel=1e-6)
    assert a > 0


def test_module_cosine_similarity_hand_case():
    m = make("fedplora", [2, 2], R=2, modules=[ModuleSpec("q", 1, 2)])
    state = m.init_global()
    starts = [m.client_start(state, c, 0) for c in (0, 1)]
    updates = [
        ClientUpdate(0, 0, {"main": {"q": (torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))}}, 1, 0.0),
        ClientUpdate(1, 0, {"main": {"q": (torch.zeros(1, 2), torch.tensor([[1.0, 1.0], [0.0, -2.0]]))}}, 1, 0.0),
    ]
    sim = module_cosine_similarity(starts, updates, "q", 2)
    s = 2 ** -0.5
    # (0, 1): [1, 0].[0, -1] = 0 and [s, s].[0, 1] = s, averaged over both client orders
    expected = torch.tensor([[s, s / 2], [s / 2, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(sim, expected)


def test_module_cosine_similarity_equals_the_pairwise_definition():
    """Heterogeneous ranks, random selections: the Gram-matrix form equals the pair-by-pair mean."""
    m = make("fedplora", [1, 2, 4, 4, 3], R=4, modules=[ModuleSpec("q", 3, 6)])
    state = random_state(m)
    starts = [m.client_start(state, c, 1) for c in range(5)]
    updates = [trained(s) for s in starts]
    sums, counts = torch.zeros(4, 4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64)
    for s, u in zip(starts, updates):
        for t, v in zip(starts, updates):
            if s.client_id == t.client_id:
                continue
            A, A2 = u.adapters["main"]["q"][1].double(), v.adapters["main"]["q"][1].double()
            for i, j in enumerate(s.adapters["main"]["q"].slots):
                for i2, j2 in enumerate(t.adapters["main"]["q"].slots):
                    sums[j, j2] += torch.nn.functional.cosine_similarity(A[i], A2[i2], dim=0)
                    counts[j, j2] += 1
    expected = torch.where(counts > 0, sums / counts.clamp_min(1), torch.tensor(float("nan"), dtype=torch.float64))
    torch.testing.assert_close(module_cosine_similarity(starts, updates, "q", 4), expected, equal_nan=True)


def test_round_bytes_follow_the_paper_overheads():
    d, k, R, r = 6, 5, 4, 1
    mods = [ModuleSpec("q", d, k)]
    plora = make("fedplora", [r], R=R, modules=mods)
    state = random_state(plora)
    start = plora.client_start(state, 0, 0)
    down, up = round_bytes([start], [trained(start)])
    assert down == 4 * (d + k) * R  # the full rank-R global PLoRA (fold factors + trainable copies)
    assert up == 4 * (d + k) * r
    flora = make("flora", [r], R=R, modules=mods)
    fstart = flora.client_start(flora.init_global(), 0, 0)
    assert round_bytes([fstart], [trained(fstart)])[0] == 4 * (d * k + (d + k) * r)
    ffa = make("ffa_lora", [r], R=R, modules=mods)
    astart = ffa.client_start(ffa.init_global(), 0, 0)
    assert round_bytes([astart], [trained(astart)])[1] == 4 * d * r  # only B goes up
    pfed = make("pfedlora", [1, 3], R=R, modules=mods)
    pstart = pfed.client_start(pfed.init_global(), 1, 0)
    assert round_bytes([pstart], [trained(pstart)]) == (4 * (d + k), 4 * (d + k))  # private stays local


def test_frobenius_of_sum_matches_dense_and_cancels_exactly():
    from orchestrator.linalg import frobenius_of_sum

    g = torch.Generator().manual_seed(0)
    B1, A1 = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randn(3, 20, generator=g, dtype=torch.float64)
    B2, A2 = torch.randn(30, 2, generator=g, dtype=torch.float64), torch.randn(2, 20, generator=g, dtype=torch.float64)
    W = torch.randn(30, 20, generator=g, dtype=torch.float64)
    dense = B1 @ A1 - 2 * B2 @ A2
    assert frobenius_of_sum([(B1, A1), (-2 * B2, A2)], []) == pytest.approx(float(dense.norm()), rel=1e-12)
    assert frobenius_of_sum([(B1, A1)], [(W, 0.5), (W, 0.25)]) == pytest.approx(float((B1 @ A1 + 0.75 * W).norm()))
    assert frobenius_of_sum([(B1, A1), (-B1[:, :2], A1[:2]), (-B1[:, 2:], A1[2:])], [(W, 1.0), (W, -1.0)]) < 1e-13
