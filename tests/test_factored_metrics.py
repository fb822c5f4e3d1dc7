"""The factored noise metrics (Gram matrices of shared pieces, QR fallback) equal the dense float64 computation."""

import math

import pytest
import torch
from method_helpers import make, random_state, ranks_for, run_rounds

from core.wire import DenseDelta, LowRankDelta
from orchestrator.linalg import PieceUnion, frobenius_of_factors
from orchestrator.methods import available_methods
from orchestrator.metrics import (
    aggregation_noise,
    fedplora_rankwise_noise,
    init_noise_functions,
    init_noise_params,
    norms_of_sums,
)

F64 = torch.float64


def dense_norm(terms):
    """``||sum_t c_t delta_t||_F`` formed densely in float64: the reference."""
    acc = None
    for delta, c in terms:
        term = delta.dense(F64) * c
        acc = term if acc is None else acc + term
    return float(acc.norm())


def random_sums(seed, d=7, k=5):
    """Sums sharing a rank-5 'global' (and bitwise copies of its columns), mixed ranks, scales, dense terms."""
    g = torch.Generator().manual_seed(seed)
    Bg, Ag = torch.randn(d, 5, generator=g), torch.randn(5, k, generator=g)
    glob = LowRankDelta(Bg, Ag, 0.5)
    W1, W2 = DenseDelta(torch.randn(d, k, generator=g)), DenseDelta(torch.randn(d, k, generator=g))
    sums = []
    for i, r in enumerate((1, 3, 4)):
        idx = torch.randperm(5, generator=g)[:r]
        copy = LowRankDelta(Bg.index_select(1, idx), Ag.index_select(0, idx), 0.5)  # bitwise copies of slots
        own = LowRankDelta(torch.randn(d, r, generator=g), torch.randn(r, k, generator=g), 1.0 + i)
        sums.append([(glob, 1.0), (copy, -1.0), (own, 0.3 * (i + 1))])
    extra = LowRankDelta(torch.randn(d, 2, generator=g), torch.randn(2, k, generator=g))
    sums.append([(glob, 1.0), (W1, 0.7), (extra, -1.0)])
    sums.append([(W1, 1.0), (W1, -1.0), (glob, -2.0)])  # the same dense tensor cancels
    sums.append([(W1, 1.0), (W2, -0.5)])
    sums.append([(LowRankDelta(Bg.double(), Ag.double()), 1.0), (glob, -2.0)])  # float64 factors mixed in
    return sums


@pytest.mark.parametrize("seed", range(5))
def test_norms_of_sums_equal_the_dense_computation_in_float64(seed):
    sums = random_sums(seed)
    got = norms_of_sums(sums)
    for terms, value in zip(sums, got):
        assert value == pytest.approx(dense_norm(terms), rel=1e-12, abs=1e-12)


def test_bitwise_copies_cancel_exactly_and_fold_into_one_piece():
    g = torch.Generator().manual_seed(0)
    B, A = torch.randn(9, 4, generator=g), torch.randn(4, 6, generator=g)
    rest, held = torch.tensor([0, 2]), torch.tensor([1, 3])
    fold = LowRankDelta(B.index_select(1, rest), A.index_select(0, rest))
    adapter = LowRankDelta(B.index_select(1, held), A.index_select(0, held))
    assert norms_of_sums([[(LowRankDelta(B, A), 1.0), (fold, -1.0), (adapter, -1.0)]]) == [0.0]  # exactly
    union = PieceUnion(9, 6)
    first, again = union.add(B, A), union.add(fold.B, fold.A)
    assert len(union) == 4 and again.tolist() == first[rest].tolist()


def test_near_cancellation_falls_back_to_qr_and_stays_accurate():
    # X = B A - (B + 1e-7 E) A: ||X|| ~ 1e-7 ||B A||; the Gram route alone would lose about half the digits
    g = torch.Generator().manual_seed(1)
    B, A, E = (torch.randn(50, 3, generator=g, dtype=F64), torch.randn(3, 40, generator=g, dtype=F64),
               torch.randn(50, 3, generator=g, dtype=F64))
    terms = [(LowRankDelta(B, A), 1.0), (LowRankDelta(B + 1e-7 * E, A), -1.0)]
    exact = float((1e-7 * E @ A).norm())
    assert norms_of_sums([terms])[0] == pytest.approx(exact, rel=1e-6)
    stacked_B, stacked_A = torch.cat([B, -(B + 1e-7 * E)], 1), torch.cat([A, A], 0)
    assert frobenius_of_factors(stacked_B, stacked_A) == pytest.approx(exact, rel=1e-6)
    naive = math.sqrt(max(float(((stacked_B.T @ stacked_B) * (stacked_A @ stacked_A.T)).sum()), 0.0))
    assert abs(naive - exact) > 1e-4 * exact  # what the fallback is for


def test_frobenius_of_factors_equals_dense():
    g = torch.Generator().manual_seed(2)
    B, A = torch.randn(30, 7, generator=g), torch.randn(7, 20, generator=g)
    assert frobenius_of_factors(B, A) == pytest.approx(float((B.double() @ A.double()).norm()), rel=1e-12)
    assert frobenius_of_factors(torch.zeros(30, 0), torch.zeros(0, 20)) == 0.0


# ---- every method: the round's metrics against dense references -----------------------------------------------


def padded_param_noise(factors, start):
    """The paper's Eq. 2 by explicit zero padding (the reference implementation)."""
    total = 0.0
    for module, (Bg, Ag) in factors.items():
        Bg, Ag = Bg.to(F64), Ag.to(F64)
        B_pad, A_pad = torch.zeros_like(Bg), torch.zeros_like(Ag)
        fresh_B, fresh_A = [], []
        for name in start.upload:
            init = start.adapters.get(name, {}).get(module)
            if init is None:
                continue
            for i, slot in enumerate(init.slots or range(init.rank)):
                if slot is None or slot >= Ag.shape[0]:
                    fresh_B.append(init.B[:, i].to(F64))
                    fresh_A.append(init.A[i].to(F64))
                else:
                    B_pad[:, slot], A_pad[slot] = init.B[:, i].to(F64), init.A[i].to(F64)
        for slot in start.folded_slots.get(module, ()):
            B_pad[:, slot], A_pad[slot] = Bg[:, slot], Ag[slot]
        dA = (Ag - A_pad).norm() ** 2 + sum(float(a.norm() ** 2) for a in fresh_A)
        dB = (Bg - B_pad).norm() ** 2 + sum(float(b.norm() ** 2) for b in fresh_B)
        total += math.sqrt(float(dA)) + math.sqrt(float(dB))
    return total


def dense_rankwise(starts, updates):
    by_id = {s.client_id: s for s in starts}
    total = 0.0
    for module in starts[0].adapters["main"]:
        per_slot = {}
        for u in updates:
            B, A = u.adapters["main"][module]
            for i, slot in enumerate(by_id[u.client_id].adapters["main"][module].slots):
                per_slot.setdefault(slot, []).append((B[:, i].to(F64), A[i].to(F64)))
        acc = 0
        for pieces in per_slot.values():
            Bs, As = torch.stack([b for b, _ in pieces], 1), torch.stack([a for _, a in pieces], 0)
            acc = acc + (Bs - Bs.mean(1, keepdim=True)) @ (As - As.mean(0, keepdim=True)) / len(pieces)
        total += float(acc.norm())
    return total


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_every_methods_metrics_equal_dense_references(name):
    ranks = ranks_for(name, [1, 2, 4])
    m = make(name, ranks, R=4)
    state, _ = run_rounds(m, [[0, 1, 2]])  # non-zero B, FLoRA's dense dW, FlexLoRA's SVD, pFedLoRA's private
    state = random_state(m, seed=3) if name in ("fedplora", "fedit", "hetlora", "ffa_lora") else state
    _, (old, starts, updates, agg) = run_rounds(m, [[0, 1, 2]], state=state)
    glob, new = m.global_delta(old), m.global_delta(agg.state)

    for start, value in zip(starts, init_noise_functions(glob, starts)):
        ref = 0.0
        for mod in glob:
            terms = [(glob[mod], 1.0)] + ([(start.fold[mod], -1.0)] if mod in start.fold else [])
            terms += [(start.adapters[n][mod].as_delta(), -1.0) for n in start.upload if mod in start.adapters[n]]
            ref += dense_norm(terms)
        assert value == pytest.approx(ref, rel=1e-9, abs=1e-12)

    factors = m.global_factors(old)
    params = init_noise_params(factors, starts)
    if factors is None:
        assert params is None
    else:
        for start, value in zip(starts, params):
            assert value == pytest.approx(padded_param_noise(factors, start), rel=1e-12, abs=1e-12)

    ref = 0.0
    by_id = {s.client_id: s for s in starts}
    for mod in new:
        terms = [(new[mod], -1.0)]
        for u in agg.used:
            s, p = by_id[u.client_id], agg.weights[u.client_id]
            terms += [(s.fold[mod], p)] if mod in s.fold else []
            terms += [(LowRankDelta(*u.adapters[n][mod], s.adapters[n][mod].scale), p)
                      for n in s.upload if mod in u.adapters.get(n, {})]
        ref += dense_norm(terms)
    assert aggregation_noise(new, starts, agg.used, agg.weights) == pytest.approx(ref, rel=1e-9, abs=1e-12)

    if name == "fedplora":
        assert fedplora_rankwise_noise(starts, updates) == pytest.approx(dense_rankwise(starts, updates), rel=1e-9)
        assert init_noise_functions(glob, starts) == [0.0] * len(starts)  # the fold cancels bitwise


# ---- the cheaper algebra at scale: zero pieces, one Gram per union, blocked dense sums, shared adapters, terms ---


def test_zero_pieces_add_nothing_and_a_zero_factor_holds_no_gram_row():
    g = torch.Generator().manual_seed(4)
    B, A = torch.randn(8, 3, generator=g), torch.randn(3, 6, generator=g)
    B[:, 1] = 0.0  # LoRA's B = 0 init on one rank, and a zero row of A on another
    A2 = torch.randn(2, 6, generator=g)
    A2[0] = 0.0
    B2 = torch.randn(8, 2, generator=g)
    union = PieceUnion(8, 6)
    assert union.add(B, A).tolist() == [0, 1, 2] and union.add(B2, A2).tolist() == [3, 4]  # held, dropped in norm
    assert union.add(torch.zeros(8, 2), A2).tolist() == [-1, -1] and len(union) == 5  # a zero B: no Gram rows
    sums = [[(LowRankDelta(B, A, 0.5), 1.0), (LowRankDelta(B2, A2), -2.0)],
            [(LowRankDelta(torch.zeros(8, 2), torch.randn(2, 6, generator=g)), 1.0)]]
    got = norms_of_sums(sums)
    assert got[0] == pytest.approx(dense_norm(sums[0]), rel=1e-12) and got[1] == 0.0


def test_all_pieces_enter_one_gram_before_the_first_norm(monkeypatch):
    calls = []
    original = PieceUnion.gram

    def counted(self):
        calls.append(self._H is None)  # a recomputation
        return original(self)

    monkeypatch.setattr(PieceUnion, "gram", counted)
    sums = random_sums(7)[:3]  # low-rank only: every sum is a norm on the union
    got = norms_of_sums(sums)
    assert sum(calls) == 1
    for terms, value in zip(sums, got):
        assert value == pytest.approx(dense_norm(terms), rel=1e-12)


@pytest.mark.parametrize("block", [1, 7, 30, 1 << 18])
def test_dense_sums_formed_by_row_blocks_equal_the_whole_matrix(monkeypatch, block):
    import orchestrator.linalg as linalg

    monkeypatch.setattr(linalg, "DENSE_BLOCK", block)  # 1 entry: one row per block; 7: rows of a 5-wide k
    g = torch.Generator().manual_seed(5)
    d, k = 11, 5
    W1, W2 = torch.randn(d, k, generator=g), torch.randn(d, k, generator=g, dtype=F64)
    low = [(torch.randn(d, r, generator=g), torch.randn(r, k, generator=g)) for r in (1, 3, 4)]  # mixed ranks
    ref = (W1.double() * 0.3 - 2.0 * W2 + sum(b.double() @ a.double() for b, a in low)).norm()
    assert linalg.frobenius_of_sum(low, [(W1, 0.3), (W2, -2.0)]) == pytest.approx(float(ref), rel=1e-13)
    assert linalg.frobenius_of_sum([], [(W1, 1.0), (W1, -0.25)]) == pytest.approx(0.75 * float(W1.double().norm()))


def test_param_noise_of_clients_sharing_adapter_tensors_with_different_slot_maps():
    from core.wire import AdapterInit, ClientStart

    g = torch.Generator().manual_seed(6)
    Bg, Ag = torch.randn(7, 4, generator=g), torch.randn(4, 5, generator=g)
    other_B, other_A = torch.randn(7, 2, generator=g), torch.randn(2, 5, generator=g)

    def start(cid, B, A, slots):
        return ClientStart(client_id=cid, round=0, seed=0, rank=len(slots), fold={},
                           adapters={"main": {"m": AdapterInit(B, A, 1.0, slots=tuple(slots))}})

    starts = [start(0, Bg, Ag, [0, 1, 2, 3]),  # the global tensors slot for slot: exactly 0
              start(1, Bg, Ag, [0, 1, 2, 3]),
              start(2, Bg, Ag, [1, 0, 3, 2]),  # the same tensors, permuted slots: not 0
              start(3, Bg[:, :2].clone(), Ag[:2].clone(), [0, 1]),  # bitwise copies of a prefix
              start(4, other_B, other_A, [2, None]),  # one held slot, one fresh rank
              start(5, other_B, other_A, [3, 1])]  # same tensors as client 4, other slots
    factors = {"m": (Bg, Ag)}
    got = init_noise_params(factors, starts)
    assert got[0] == got[1] == 0.0
    for s, value in zip(starts, got):
        assert value == pytest.approx(padded_param_noise(factors, s), rel=1e-12, abs=1e-15)
    assert got[2] > 1.0 and got[4] != got[5]


def test_fedex_lora_metrics_take_the_global_as_its_exact_terms():
    from orchestrator.metrics import noise_metrics

    m = make("fedex_lora", [4, 4, 4], R=4)
    state, _ = run_rounds(m, [[0, 1, 2]])
    _, (old, starts, updates, agg) = run_rounds(m, [[0, 1, 2]], state=state)
    for mod, (dense, low) in m.global_terms(old).items():
        rounded = m.global_delta(old)[mod].W
        assert torch.allclose(dense.W.double() + low.dense(F64), rounded.double(), rtol=1e-6, atol=1e-7)
    out = noise_metrics(m, old, starts, agg)
    assert out["init_noise_fn"] == 0.0  # the fold is the global dW itself, the adapters the global B, A
    ref = 0.0
    for mod, (dense, low) in m.global_terms(agg.state).items():
        ideal = sum(agg.weights[u.client_id] * (s.fold[mod].W.double() + m.scale * u.adapters["main"][mod][0].double()
                                                @ u.adapters["main"][mod][1].double())
                    for s, u in zip(starts, agg.used))
        ref += float((ideal - dense.W.double() - low.dense(F64)).norm())
    assert out["agg_noise"] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert 0.0 < out["agg_noise"] < 1e-4  # the exact residual fold: only the float32 rounding of dW remains


def test_metrics_threads_is_checked_and_the_thread_count_restored():
    from workers.resources import ResourceConfig, process_cpus, torch_threads

    with pytest.raises(ValueError, match="resources.metrics_threads"):
        ResourceConfig(metrics_threads=-1)
    before = torch.get_num_threads()
    with torch_threads(0) as n:
        assert n == process_cpus() and torch.get_num_threads() == n
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("d,k", [(50, 40), (40, 50)])  # the QR on either side
def test_qr_fallback_on_the_shorter_side_resolves_cancellation(d, k):
    from orchestrator.linalg import _qr_norm

    g = torch.Generator().manual_seed(8)
    B, A, E = (torch.randn(d, 6, generator=g, dtype=F64), torch.randn(6, k, generator=g, dtype=F64),
               torch.randn(d, 6, generator=g, dtype=F64))
    exact = float((1e-9 * E @ A).norm())  # B A - (B + 1e-9 E) A, formed without the cancellation
    assert _qr_norm(torch.cat([B, -(B + 1e-9 * E)], 1), torch.cat([A, A], 0)) == pytest.approx(exact, rel=1e-5)
    c = torch.tensor([2.0] * 6 + [-2.0] * 6, dtype=F64)  # the coefficients on the small R factor
    assert _qr_norm(torch.cat([B, B + 1e-9 * E], 1), torch.cat([A, A], 0), c) == pytest.approx(2 * exact, rel=1e-5)


def test_a_term_copied_from_held_pieces_is_matched_whole_and_a_near_copy_is_not():
    g = torch.Generator().manual_seed(9)
    B, A = torch.randn(200, 5, generator=g), torch.randn(5, 7, generator=g)  # d > 64: fingerprints sample rows
    union = PieceUnion(200, 7)
    assert union.add(B, A).tolist() == [0, 1, 2, 3, 4]
    idx = torch.tensor([3, 1, 4])
    assert union.add(B.index_select(1, idx), A.index_select(0, idx)).tolist() == [3, 1, 4]  # one whole copy
    near = B.index_select(1, idx).clone()
    near[1, 1] = torch.nextafter(near[1, 1], torch.tensor(10.0))  # one bit off, in a row no fingerprint samples
    assert union.add(near, A.index_select(0, idx)).tolist() == [3, 5, 4] and len(union) == 6
    mixed_B = torch.cat([B[:, :2], torch.randn(200, 1, generator=g)], 1)  # two copies and a new piece
    assert union.add(mixed_B, torch.cat([A[:2], A[2:3]], 0)).tolist() == [0, 1, 6]
    terms = [(LowRankDelta(B, A), 1.0), (LowRankDelta(near, A.index_select(0, idx)), -1.0)]
    assert norms_of_sums([terms])[0] == pytest.approx(dense_norm(terms), rel=1e-12)


@pytest.mark.parametrize("name", ["flora", "fedex_lora", "flexlora"])
def test_exact_aggregations_report_their_rounding_as_the_aggregation_noise(name):
    from orchestrator.metrics import noise_metrics

    m = make(name, ranks_for(name, [1, 2, 4]), R=4)
    state, _ = run_rounds(m, [[0, 1, 2], [0, 2]])  # dW != 0, so the rounding is not trivially zero
    _, (old, starts, updates, agg) = run_rounds(m, [[0, 1, 2]], state=state)
    assert set(agg.info["agg_noise"]) == set(m.modules)
    computed = aggregation_noise(m.global_terms(agg.state), starts, agg.used, agg.weights)  # the ideal formed anew
    reported = noise_metrics(m, old, starts, agg)["agg_noise"]
    assert 0.0 < reported < 1e-5 and reported == pytest.approx(computed, rel=1e-6)


def test_rounded_with_noise_is_the_plain_cast_and_its_exact_loss():
    from orchestrator.methods.base import rounded_with_noise

    g = torch.Generator().manual_seed(10)
    x = torch.randn(300, 700, generator=g, dtype=F64) * 1e3  # several row blocks, a partial last one
    stored, noise = rounded_with_noise(x, torch.float32)
    assert stored.dtype == torch.float32 and torch.equal(stored, x.to(torch.float32))
    assert noise == pytest.approx(float((x - x.to(torch.float32).double()).norm()), rel=1e-12) and noise > 0
    same, zero = rounded_with_noise(x, F64)
    assert same is x and zero == 0.0


def test_svd_rounding_noise_equals_the_dense_difference():
    from orchestrator.linalg import factored_svd
    from orchestrator.methods.flexlora import svd_rounding_noise

    g = torch.Generator().manual_seed(11)
    U, S, Vh = factored_svd(torch.randn(40, 6, generator=g), torch.randn(6, 30, generator=g))
    US = U * S
    B, A = US.to(torch.float32), Vh.to(torch.float32)
    dense = float((US @ Vh - B.double() @ A.double()).norm())
    assert svd_rounding_noise(US, Vh, B, A) == pytest.approx(dense, rel=1e-6) and dense > 0
    assert svd_rounding_noise(US, Vh, US, Vh) == 0.0  # nothing rounded


def test_metrics_threads_never_changes_the_fingerprint():
    from orchestrator.config import RunConfig, load_config

    every_cpu = load_config(None, ["resources.metrics_threads=0"])
    for exclude in ((), ("rounds",)):
        assert every_cpu.fingerprint(exclude) == RunConfig().fingerprint(exclude)
