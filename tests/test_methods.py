"""Exact algebra of every federated method (driver-side, pure torch)."""

import json
import math

import pytest
import torch
from method_helpers import MODULES, make, random_state, ranks_for, run_rounds, trained

from core.wire import ModuleSpec
from orchestrator.linalg import factored_svd
from orchestrator.methods import available_methods
from orchestrator.state import GlobalState
from orchestrator.update_checks import InvalidClientUpdate

F64 = torch.float64


# ---- Fed-PLoRA: the fold -------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2, 3, 4])
@pytest.mark.parametrize("selection", ["random", "fixed", "weight_norm"])
@pytest.mark.parametrize("scaling", ["standard", "rslora"])
def test_fold_start_function_equals_global_model(rank, selection, scaling):
    m = make("fedplora", [rank] * 3, R=4, selection=selection, scaling=scaling)
    state = random_state(m)
    glob = m.global_delta(state)
    for cid in range(3):
        start = m.client_start(state, cid, round_idx=5)
        for module in glob:
            expected = glob[module].dense(F64)
            got = start.start_delta(module, dtype=F64)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
            assert start.adapters["main"][module].rank == rank


def test_select_n_drop_breaks_fold_by_exactly_the_dropped_part():
    m = make("fedplora", [2, 2], R=4, unselected="drop")
    state = random_state(m)
    start = m.client_start(state, 1, 3)
    assert start.fold == {}
    for module, delta in m.global_delta(state).items():
        slots = list(start.adapters["main"][module].slots)
        dropped = [j for j in range(4) if j not in slots]
        B, A = m.factors(state, module)
        dropped_part = B[:, dropped].double() @ A[dropped].double() * m.scale
        torch.testing.assert_close(delta.dense(F64) - start.start_delta(module, dtype=F64), dropped_part,
                                   rtol=0, atol=1e-12)
        assert dropped_part.norm() > 0


def test_fedplora_all_full_rank_equals_fedit_uniform_bit_for_bit():
    ranks = [4] * 5
    plora = make("fedplora", ranks, R=4)
    fedit = make("fedit", ranks, R=4, weighting="uniform")
    head = {"classifier.weight": torch.ones(2, 3)}
    rounds = [[0, 1, 2], [3, 4], [1, 2, 3, 4]]
    s1, _ = run_rounds(plora, rounds, head=head)
    s2, _ = run_rounds(fedit, rounds, head=head)
    assert s1.tensors.keys() == s2.tensors.keys()
    for k in s1.tensors:
        assert torch.equal(s1.tensors[k], s2.tensors[k]), k


def test_fedplora_aggregation_is_per_slot_mean_and_untrained_slots_keep_values():
    m = make("fedplora", [1, 1], R=4, selection="fixed")  # both clients train slot 0 only
    state = random_state(m)
    starts = [m.client_start(state, c, 0) for c in (0, 1)]
    updates = [trained(s) for s in starts]
    new = m.aggregate(state, starts, updates).state
    for module in m.modules:
        B_new, A_new = m.factors(new, module)
        B_old, A_old = m.factors(state, module)
        expected_A0 = (updates[0].adapters["main"][module][1][0] + updates[1].adapters["main"][module][1][0]) / 2
        torch.testing.assert_close(A_new[0], expected_A0)
        assert torch.equal(A_new[1:], A_old[1:]) and torch.equal(B_new[:, 1:], B_old[:, 1:])


def test_selection_reproducible_and_independent_of_call_order():
    m = make("fedplora", [2] * 6, R=4)
    state = random_state(m)
    forward = {c: m.client_start(state, c, 7) for c in range(6)}
    backward = {c: m.client_start(state, c, 7) for c in reversed(range(6))}
    other = make("fedplora", [2] * 6, R=4)  # a fresh object, same seed
    again = {c: other.client_start(state, c, 7) for c in (3, 1, 5, 0, 2, 4)}
    slots = lambda s: {k: v.slots for k, v in s.adapters["main"].items()}  # noqa: E731
    for c in range(6):
        assert slots(forward[c]) == slots(backward[c]) == slots(again[c])
    # the draw depends on round, client and module
    assert len({tuple(slots(forward[c]).values()) for c in range(6)}) > 1
    later = [slots(m.client_start(state, 0, t)) for t in (8, 9)]
    assert any(s != slots(forward[0]) for s in later)
    per_module = list(slots(forward[0]).values())
    assert any(per_module[0] != p for c in range(6) for p in slots(forward[c]).values())


def test_weight_norm_selection_picks_largest_one_rank_modules():
    m = make("fedplora", [2], R=4, selection="weight_norm", modules=[ModuleSpec("q", 3, 2)])
    state = m.init_global()
    state.tensors["q/B"] = torch.tensor([[1.0, 0, 5, 0], [0, 0, 0, 0], [0, 3, 0, 0]])
    state.tensors["q/A"] = torch.ones(4, 2)
    assert m.client_start(state, 0, 0).adapters["main"]["q"].slots == (1, 2)


# ---- FLoRA ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighting", ["data", "uniform"])
def test_flora_new_delta_is_weighted_sum_of_products(weighting):
    m = make("flora", [1, 3, 4], R=4, weighting=weighting)
    state = random_state(m)
    starts = [m.client_start(state, c, 2) for c in (0, 1, 2)]
    for s in starts:  # fresh adapters: B = 0, A random, fold = the dense global weights
        for module, init in s.adapters["main"].items():
            assert torch.count_nonzero(init.B) == 0 and torch.count_nonzero(init.A) > 0
            assert torch.equal(s.fold[module].dense(), state.tensors[f"{module}/dW"])
    updates = [trained(s) for s in starts]
    agg = m.aggregate(state, starts, updates)
    n = torch.tensor([u.n_examples for u in updates], dtype=F64)
    p = n / n.sum() if weighting == "data" else torch.full((3,), 1 / 3, dtype=F64)
    for module in m.modules:
        expected = sum(p[i] * (u.adapters["main"][module][0].double() @ u.adapters["main"][module][1].double())
                       for i, u in enumerate(updates))
        got = agg.state.tensors[f"{module}/dW"].double() - state.tensors[f"{module}/dW"].double()
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        assert agg.weights == pytest.approx({i: float(p[i]) for i in range(3)})


# ---- FlexLoRA ------------------------------------------------------------------------------------------
def test_factored_svd_matches_dense_svd_fp64():
    g = torch.Generator().manual_seed(0)
    B, A = torch.randn(40, 7, generator=g, dtype=F64), torch.randn(7, 30, generator=g, dtype=F64)
    U, S, Vh = factored_svd(B, A)
    S_dense = torch.linalg.svdvals(B @ A)
    torch.testing.assert_close(S, S_dense[:7], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((U * S) @ Vh, B @ A, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(U.T @ U, torch.eye(7, dtype=F64), rtol=0, atol=1e-10)


def test_flexlora_global_is_weighted_sum_and_client_gets_best_rank_r_approximation():
    modules = [ModuleSpec("q", 12, 9)]
    m = make("flexlora", [1, 2, 3], R=3, modules=modules)
    state, (_, starts, updates, agg) = run_rounds(m, [[0, 1, 2], [0, 1, 2]])
    n = torch.tensor([u.n_examples for u in updates], dtype=F64)
    p = n / n.sum()
    dW = sum(p[i] * u.adapters["main"]["q"][0].double() @ u.adapters["main"]["q"][1].double()
             for i, u in enumerate(updates))
    torch.testing.assert_close(m.global_delta(state)["q"].dense(F64), dW, rtol=1e-6, atol=1e-6)
    U, S, Vh = torch.linalg.svd(dW)
    for cid, r in enumerate([1, 2, 3]):
        init = m.client_start(state, cid, 2).adapters["main"]["q"]
        best = (U[:, :r] * S[:r]) @ Vh[:r]
        torch.testing.assert_close(init.as_delta().dense(F64), best, rtol=1e-5, atol=1e-5)
        A = init.A.double()
        torch.testing.assert_close(A @ A.T, torch.eye(r, dtype=F64), rtol=0, atol=1e-5)  # orthonormal A


def test_flexlora_ranks_beyond_global_rank_start_fresh():
    m = make("flexlora", [1, 4], R=4, modules=[ModuleSpec("q", 6, 5)])
    state, _ = run_rounds(m, [[0]])  # only the rank-1 client: dW_g has rank 1
    init = m.client_start(state, 1, 1).adapters["main"]["q"]
    assert init.slots == (0, None, None, None)
    assert torch.count_nonzero(init.B[:, 1:]) == 0 and torch.count_nonzero(init.A[1:]) > 0


# ---- HETLoRA -------------------------------------------------------------------------------------------
def test_hetlora_zero_padding_hand_computed_two_clients():
    mod = [ModuleSpec("q", 1, 1)]
    m = make("hetlora", [1, 2], R=2, modules=mod, weighting="data", hetlora_prune=False)
    state = m.init_global()
    state.tensors["q/B"] = torch.tensor([[1.0, 2.0]])
    state.tensors["q/A"] = torch.tensor([[3.0], [4.0]])
    s0, s1 = m.client_start(state, 0, 0), m.client_start(state, 1, 0)
    assert s0.adapters["main"]["q"].slots == (0,) and torch.equal(s0.adapters["main"]["q"].B, torch.tensor([[1.0]]))
    from core.wire import ClientUpdate
    u0 = ClientUpdate(0, 0, {"main": {"q": (torch.tensor([[10.0]]), torch.tensor([[20.0]]))}}, 1, 0.0)
    u1 = ClientUpdate(1, 0, {"main": {"q": (torch.tensor([[30.0, 40.0]]), torch.tensor([[50.0], [60.0]]))}}, 3, 0.0)
    new = m.aggregate(state, [s0, s1], [u0, u1]).state
    # p = (1/4, 3/4); slot 0: 1/4*10 + 3/4*30 = 25 (B), 1/4*20 + 3/4*50 = 42.5 (A); slot 1: 3/4*40, 3/4*60
    torch.testing.assert_close(new.tensors["q/B"], torch.tensor([[25.0, 30.0]]))
    torch.testing.assert_close(new.tensors["q/A"], torch.tensor([[42.5], [45.0]]))


def test_hetlora_sparsity_weights_and_untrained_slots_unchanged():
    mod = [ModuleSpec("q", 1, 1)]
    m = make("hetlora", [1, 1], R=3, modules=mod, hetlora_prune=False)
    state = m.init_global()
    state.tensors["q/B"] = torch.tensor([[1.0, 2.0, 3.0]])
    state.tensors["q/A"] = torch.tensor([[1.0], [1.0], [1.0]])
    from core.wire import ClientUpdate
    starts = [m.client_start(state, c, 0) for c in (0, 1)]
    u = [ClientUpdate(0, 0, {"main": {"q": (torch.tensor([[1.0]]), torch.tensor([[2.0]]))}}, 5, 0.0),
         ClientUpdate(1, 0, {"main": {"q": (torch.tensor([[3.0]]), torch.tensor([[2.0]]))}}, 5, 0.0)]
    agg = m.aggregate(state, starts, u)
    # ||B A||: 2 and 6 -> p = (1/4, 3/4)
    assert agg.weights == pytest.approx({0: 0.25, 1: 0.75})
    torch.testing.assert_close(agg.state.tensors["q/B"], torch.tensor([[2.5, 2.0, 3.0]]))
    torch.testing.assert_close(agg.state.tensors["q/A"], torch.tensor([[2.0], [1.0], [1.0]]))


def test_hetlora_self_pruning_shrinks_rank_when_tail_shrinks():
    mod = [ModuleSpec("q", 2, 2)]
    m = make("hetlora", [4], R=4, modules=mod, hetlora_gamma=0.5)
    state = m.init_global()
    state.tensors["q/B"] = torch.ones(2, 4)
    state.tensors["q/A"] = torch.ones(4, 2)
    start = m.client_start(state, 0, 0)
    assert start.penalty is not None and start.penalty.start == {"q": 2}
    from core.wire import ClientUpdate
    B = torch.ones(2, 4)
    B[:, 2:] = 0.1  # tail shrank
    new = m.aggregate(state, [start], [ClientUpdate(0, 0, {"main": {"q": (B, torch.ones(4, 2))}}, 3, 0.0)]).state
    assert m.client_rank(new, 0) == 2
    assert m.client_start(new, 0, 1).adapters["main"]["q"].rank == 2
    torch.testing.assert_close(new.tensors["q/B"][:, 2:], torch.ones(2, 2))  # pruned slots keep old value


# ---- FFA-LoRA and pFedLoRA -----------------------------------------------------------------------------
def test_ffa_lora_freezes_A_and_averages_B():
    m = make("ffa_lora", [4, 4], R=4)
    state0 = m.init_global()
    start = m.client_start(state0, 0, 0)
    assert all(not a.train_A and a.train_B for a in start.adapters["main"].values())
    state, (_, starts, updates, agg) = run_rounds(m, [[0, 1], [0, 1]])
    for module in m.modules:
        assert torch.equal(state.tensors[f"{module}/A"], state0.tensors[f"{module}/A"])
        p = agg.weights
        B_exp = sum(p[u.client_id] * u.adapters["main"][module][0] for u in updates)
        torch.testing.assert_close(state.tensors[f"{module}/B"], B_exp)


def test_pfedlora_private_state_and_personal_model():
    m = make("pfedlora", [1, 3], R=4)
    state, (_, starts, updates, agg) = run_rounds(m, [[0, 1], [1]])
    assert m.shared_rank == 1
    s1 = [s for s in starts if s.client_id == 1][0]
    assert s1.upload == ("shared",) and [st.train for st in s1.stages] == [("private",), ("shared",)]
    priv_B, priv_A = updates[0].adapters["private"]["layer0.q"]
    assert torch.equal(state.tensors["client/1/layer0.q/private/B"], priv_B)
    nxt = m.client_start(state, 1, 2)
    assert torch.equal(nxt.adapters["private"]["layer0.q"].A, priv_A)
    personal = m.personal_delta(state, 1)["layer0.q"].dense(F64)
    expected = m.global_delta(state)["layer0.q"].dense(F64) + priv_B.double() @ priv_A.double()
    torch.testing.assert_close(personal, expected)
    assert m.personal_delta(m.init_global(), 0) is None


def test_head_is_data_weighted_average():
    m = make("fedplora", [2, 4], R=4)
    head = {"classifier.weight": torch.zeros(2, 2)}
    state = m.init_global(head)
    starts = [m.client_start(state, c, 0) for c in (0, 1)]
    updates = [trained(s, n_examples=n) for s, n in zip(starts, (1, 3))]
    updates[0].head["classifier.weight"].fill_(4.0)
    updates[1].head["classifier.weight"].fill_(8.0)
    new = m.aggregate(state, starts, updates).state
    torch.testing.assert_close(new.tensors["head/classifier.weight"], torch.full((2, 2), 7.0))


# ---- Bad input -----------------------------------------------------------------------------------------
def test_unknown_method_lists_known_ones():
    with pytest.raises(ValueError, match=r"method.name='fedavg'.*fedplora.*flora"):
        make("fedavg", [1])


@pytest.mark.parametrize("ranks, match", [([0, 2], "client 0 has rank 0"), ([2, 5], "client 1 has rank 5")])
def test_bad_ranks(ranks, match):
    with pytest.raises(ValueError, match=match):
        make("fedplora", ranks, R=4)


def test_fedit_requires_homogeneous_ranks():
    with pytest.raises(ValueError, match="homogeneous"):
        make("fedit", [1, 4], R=4)


def test_sparsity_weighting_only_for_hetlora():
    with pytest.raises(ValueError, match="method.weighting='sparsity'"):
        make("fedplora", [1, 4], R=4, weighting="sparsity")


@pytest.mark.parametrize("corrupt", ["shape", "nan", "inf", "module"])
@pytest.mark.parametrize("name", ["fedplora", "flora", "flexlora", "hetlora", "fedit", "ffa_lora", "pfedlora",
                                  "fedsa_lora", "fedex_lora", "rbla"])
def test_bad_update_rejected_with_client_id_and_state_untouched(name, corrupt):
    m = make(name, [4, 4, 4], R=4)
    state = random_state(m)
    before = {k: v.clone() for k, v in state.tensors.items()}
    starts = [m.client_start(state, c, 0) for c in range(3)]
    updates = [trained(s) for s in starts]
    adapter = starts[1].upload[0]
    B, A = updates[1].adapters[adapter]["layer0.q"]
    if corrupt == "shape":
        updates[1].adapters[adapter]["layer0.q"] = (B[:, :-1], A)
    elif corrupt == "nan":
        A[0, 0] = float("nan")
    elif corrupt == "inf":
        B[0, 0] = float("inf")
    else:
        del updates[1].adapters[adapter]["layer0.q"]
    with pytest.raises(InvalidClientUpdate, match="client 1") as err:
        m.aggregate(state, starts, updates)
    assert err.value.client_id == 1
    for k, v in state.tensors.items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("name", ["fedplora", "flora", "flexlora", "hetlora", "fedit", "ffa_lora", "pfedlora",
                                  "fedsa_lora", "fedex_lora", "rbla"])
def test_aggregate_never_changes_a_float64_state_in_place(name):
    """``.to(float64)`` of a float64 tensor is the tensor itself: a rule must not update it in place."""
    m = make(name, ranks_for(name, [1, 2, 4]), R=4)
    state, _ = run_rounds(m, [[0, 1, 2]], state=random_state(m))  # every kind of state tensor exists
    state = GlobalState({k: v.to(F64) for k, v in state.tensors.items()}, state.meta)
    before = {k: v.clone() for k, v in state.tensors.items()}
    meta = json.dumps(state.meta, sort_keys=True)
    starts = [m.client_start(state, c, 1) for c in (0, 1, 2)]
    m.aggregate(state, starts, [trained(s) for s in starts])
    assert state.tensors.keys() == before.keys() and json.dumps(state.meta, sort_keys=True) == meta
    for k, v in state.tensors.items():
        assert v.dtype == F64 and torch.equal(v, before[k]), k


def test_zero_updates_is_an_error():
    m = make("fedplora", [2, 4], R=4)
    with pytest.raises(ValueError, match="at least one client update"):
        m.aggregate(m.init_global(), [], [])


def test_every_method_runs_heterogeneous_rounds():
    for name in available_methods():
        m = make(name, ranks_for(name, [1, 2, 4]), R=4)
        state, _ = run_rounds(m, [[0, 1, 2], [2, 0]])
        for module, delta in m.global_delta(state).items():
            assert delta.shape == (m.modules[module].d_out, m.modules[module].k_in)
            assert torch.isfinite(delta.dense()).all() and delta.dense().abs().sum() > 0, name


def test_scale_is_alpha_over_R_or_sqrt_R():
    assert make("fedplora", [1], R=16).scale == 1.0
    assert make("fedplora", [1], R=16, scaling="rslora").scale == pytest.approx(4.0)
    assert make("fedplora", [1], R=16, lora_alpha=32).scale == 2.0
    assert math.isclose(make("fedplora", [1], R=16, scaling="rslora", lora_alpha=8).scale, 2.0)
    assert MODULES  # shared module set is non-empty


@pytest.mark.parametrize("name", ["fedplora", "flora", "flexlora", "hetlora", "pfedlora", "fedsa_lora", "rbla"])
def test_aggregation_independent_of_completion_order(name):
    m = make(name, [1, 2, 4, 4], R=4)
    state = random_state(m)
    starts = [m.client_start(state, c, 0) for c in range(4)]
    updates = [trained(s) for s in starts]
    a = m.aggregate(state, starts, updates).state
    b = m.aggregate(state, list(reversed(starts)), [updates[i] for i in (2, 0, 3, 1)]).state
    assert a.tensors.keys() == b.tensors.keys() and a.meta == b.meta
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
