"""Exact algebra of FedSA-LoRA, FedEx-LoRA and RBLA, and the generic checks every method passes."""

import math

import pytest
import torch
from method_helpers import make, random_state, ranks_for, run_rounds, trained

from core.wire import ClientUpdate, ModuleSpec
from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.methods import available_methods
from orchestrator.metrics import noise_metrics, round_bytes
from orchestrator.state import GlobalState

F64 = torch.float64
SCALAR = [ModuleSpec("q", 1, 1)]


def update(cid, B, A, n):
    return ClientUpdate(cid, 0, {"main": {"q": (torch.tensor(B), torch.tensor(A))}}, n, 0.0)


def to_f64(state: GlobalState) -> GlobalState:
    return GlobalState({k: v.to(F64) for k, v in state.tensors.items()}, state.meta)



# ---- FedSA-LoRA ----------------------------------------------------------------------------------------
def test_fedsa_hand_computed_two_clients_heterogeneous_ranks():
    # Prepare: global B = [1, 2], A = [3; 4]; clients of rank 1 and 2, never seen (local B = 0)
    m = make("fedsa_lora", [1, 2], R=2, modules=SCALAR)
    state = m.init_global()
    state.tensors["q/B"] = torch.tensor([[1.0, 2.0]])
    state.tensors["q/A"] = torch.tensor([[3.0], [4.0]])
    s0, s1 = m.client_start(state, 0, 0), m.client_start(state, 1, 0)
    for s, r in ((s0, 1), (s1, 2)):
        init = s.adapters["main"]["q"]
        assert init.local_B and init.slots == tuple(range(r)) and torch.count_nonzero(init.B) == 0
        assert torch.equal(init.A, state.tensors["q/A"][:r])
    # Execute: data weights n = (1, 3) -> p = (1/4, 3/4)
    new = m.aggregate(state, [s0, s1], [update(0, [[10.0]], [[20.0]], 1),
                                        update(1, [[30.0, 40.0]], [[50.0], [60.0]], 3)]).state
    # Assert: A slot 0 = (20 + 3*50)/4 = 42.5, slot 1 only client 1 = 60; B stays with each client
    torch.testing.assert_close(new.tensors["q/A"], torch.tensor([[42.5], [60.0]]))
    torch.testing.assert_close(new.tensors["q/B"], torch.tensor([[25.0, 40.0]]))  # evaluation-only mean
    assert torch.equal(new.tensors["client/0/q/B"], torch.tensor([[10.0]]))
    assert torch.equal(new.tensors["client/1/q/B"], torch.tensor([[30.0, 40.0]]))
    nxt = m.client_start(new, 1, 1).adapters["main"]["q"]
    assert torch.equal(nxt.B, torch.tensor([[30.0, 40.0]])) and torch.equal(nxt.A, torch.tensor([[42.5], [60.0]]))
    # personalized model of client 1: 30 * 42.5 + 40 * 60 = 3675
    torch.testing.assert_close(m.personal_delta(new, 1)["q"].dense(), torch.tensor([[3675.0]]))


@pytest.mark.parametrize("weighting", ["data", "uniform"])
def test_fedsa_global_A_is_weighted_mean_and_each_B_is_what_the_client_uploaded(weighting):
    m = make("fedsa_lora", [4, 4, 4], R=4, weighting=weighting)
    state, (old, starts, updates, agg) = run_rounds(m, [[0, 1, 2], [2, 0]], state=random_state(m))
    p = agg.weights
    assert sum(p.values()) == pytest.approx(1.0)
    for module in m.modules:
        A_exp = sum(p[u.client_id] * u.adapters["main"][module][1].double() for u in updates)
        torch.testing.assert_close(state.tensors[f"{module}/A"].double(), A_exp, rtol=0, atol=1e-6)
        for u in updates:
            assert torch.equal(state.tensors[f"client/{u.client_id}/{module}/B"], u.adapters["main"][module][0])
    # client 1 sat out the last round: its B is still what it uploaded in the first one
    assert "client/1/layer0.q/B" in state.tensors


def test_fedsa_start_of_round_function_is_the_clients_personal_model():
    m = make("fedsa_lora", [1, 2, 4], R=4)
    state, _ = run_rounds(m, [[0, 1], [1, 2]], state=random_state(m))
    for cid in (0, 1, 2):
        start = m.client_start(state, cid, 2)
        personal = m.personal_delta(state, cid)
        for module, delta in personal.items():
            torch.testing.assert_close(start.start_delta(module, dtype=F64), delta.dense(F64), rtol=0, atol=0)
    fresh = make("fedsa_lora", [1, 2, 4], R=4)
    assert fresh.personal_delta(state, 0) is not None and fresh.personal_delta(fresh.init_global(), 0) is None


def test_fedsa_first_round_equals_fedit_from_the_same_init():
    # every client starts with B = 0 = FedIT's initial global B, so the first aggregate is FedIT's
    fedsa, fedit = make("fedsa_lora", [4] * 4, R=4), make("fedit", [4] * 4, R=4)
    a, _ = run_rounds(fedsa, [[0, 1, 3]])
    b, _ = run_rounds(fedit, [[0, 1, 3]])
    for k in b.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


def test_fedsa_ships_only_A():
    d, k, r = 6, 5, 3
    m = make("fedsa_lora", [r], R=4, modules=[ModuleSpec("q", d, k)])
    start = m.client_start(random_state(m), 0, 0)
    assert round_bytes([start], [trained(start)]) == (4 * r * k, 4 * r * k)


# ---- FedEx-LoRA ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("lora_alpha, s", [(None, 1.0), (2.0, 2.0)])
def test_fedex_hand_computed_residual(lora_alpha, s):
    m = make("fedex_lora", [1, 1], R=1, modules=SCALAR, lora_alpha=lora_alpha)
    assert m.scale == s and m.weighting == "uniform"
    state = m.init_global()
    starts = [m.client_start(state, c, 0) for c in (0, 1)]
    new = m.aggregate(state, starts, [update(0, [[2.0]], [[3.0]], 1), update(1, [[4.0]], [[5.0]], 9)]).state
    # B' = 3, A' = 4, mean(B_i A_i) = (6 + 20)/2 = 13, residual = 13 - 12 = 1 (uniform weights by default)
    assert new.tensors["q/B"].item() == 3.0 and new.tensors["q/A"].item() == 4.0
    assert new.tensors["q/dW"].item() == s * 1.0
    assert m.global_delta(new)["q"].dense().item() == s * 13.0
    nxt = m.client_start(new, 0, 1)
    assert nxt.fold["q"].dense().item() == s * 1.0  # the residual is folded into the frozen weights


@pytest.mark.parametrize("weighting", ["uniform", "data"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fedex_aggregate_is_exact(weighting, dtype):
    m = make("fedex_lora", [4] * 5, R=4, weighting=weighting, scaling="rslora")
    state, _ = run_rounds(m, [[0, 1, 2], [3, 4]], state=random_state(m))
    state = GlobalState({k: v.to(dtype) for k, v in state.tensors.items()})
    starts = [m.client_start(state, c, 2) for c in (0, 2, 3, 4)]
    updates = [trained(s, step=0.5) for s in starts]
    agg = m.aggregate(state, starts, updates)
    tol = 1e-12 if dtype == F64 else 1e-5
    for module, delta in m.global_delta(agg.state).items():
        # W0 + fold + s B' A' == W0 + dW_old + sum_i p_i s B_i A_i: the mean of the clients' models
        ideal = state.tensors[f"{module}/dW"].to(F64) + sum(
            agg.weights[u.client_id] * m.scale * u.adapters["main"][module][0].to(F64)
            @ u.adapters["main"][module][1].to(F64) for u in updates)
        fold = agg.state.tensors[f"{module}/dW"].to(F64)
        B, A = (t.to(F64) for t in m.factors(agg.state, module))
        torch.testing.assert_close(fold + m.scale * B @ A, ideal, rtol=0, atol=tol)
        torch.testing.assert_close(delta.dense(F64), ideal, rtol=0, atol=tol)
        assert float((ideal - state.tensors[f"{module}/dW"].to(F64)
                      - m.scale * B @ A).norm()) > 1e-3  # the residual is not negligible here
    assert noise_metrics(m, state, starts, agg)["agg_noise"] < (1e-10 if dtype == F64 else 1e-4)


def test_fedex_factors_are_fedits_and_one_client_rounds_equal_fedit_bit_for_bit():
    fedex, fedit = make("fedex_lora", [4] * 4, R=4), make("fedit", [4] * 4, R=4, weighting="uniform")
    head = {"classifier.weight": torch.ones(2, 3)}
    one, _ = run_rounds(fedex, [[0], [2], [1]], head=head)
    ref, _ = run_rounds(fedit, [[0], [2], [1]], head=head)
    for k in ref.tensors:
        assert torch.equal(one.tensors[k], ref.tensors[k]), k
    assert all(torch.count_nonzero(one.tensors[f"{m}/dW"]) == 0 for m in fedex.modules)
    many, _ = run_rounds(fedex, [[0, 1, 2], [3, 1]], head=head)
    ref, _ = run_rounds(fedit, [[0, 1, 2], [3, 1]], head=head)
    for k in ref.tensors:  # the synthetic updates depend on the adapters only: same factors as FedIT
        assert torch.equal(many.tensors[k], ref.tensors[k]), k
    assert all(torch.count_nonzero(many.tensors[f"{m}/dW"]) > 0 for m in fedex.modules)


def test_fedex_start_of_round_function_is_the_global_model():
    m = make("fedex_lora", [2, 2, 2], R=4)
    assert m.global_rank == 2
    state, _ = run_rounds(m, [[0, 1, 2], [0, 2]], state=random_state(m))
    glob = m.global_delta(state)
    for cid in range(3):
        start = m.client_start(state, cid, 2)
        for module, delta in glob.items():
            torch.testing.assert_close(start.start_delta(module, dtype=F64), delta.dense(F64), rtol=0, atol=1e-6)


def test_fedex_refuses_mixed_ranks_like_fedit():
    with pytest.raises(ValueError, match=r"method 'fedex_lora' needs every client at the same rank.*homogeneous"):
        make("fedex_lora", [1, 4], R=4)


# ---- RBLA ----------------------------------------------------------------------------------------------
def test_rbla_hand_computed_two_clients_versus_zero_padding():
    m = make("rbla", [1, 2], R=2, modules=SCALAR)
    state = m.init_global()
    state.tensors["q/B"] = torch.tensor([[1.0, 2.0]])
    state.tensors["q/A"] = torch.tensor([[3.0], [4.0]])
    s0, s1 = m.client_start(state, 0, 0), m.client_start(state, 1, 0)
    assert torch.equal(s0.adapters["main"]["q"].B, torch.tensor([[1.0]])) and s1.adapters["main"]["q"].rank == 2
    new = m.aggregate(state, [s0, s1], [update(0, [[10.0]], [[20.0]], 1),
                                        update(1, [[30.0, 40.0]], [[50.0], [60.0]], 3)]).state
    # slot 0 held by both: (1*10 + 3*30)/4 = 25 and (1*20 + 3*50)/4 = 42.5; slot 1 held by client 1
    # only: its own 40 and 60 (HETLoRA's zero padding gives 3/4 of them: 30 and 45)
    torch.testing.assert_close(new.tensors["q/B"], torch.tensor([[25.0, 40.0]]))
    torch.testing.assert_close(new.tensors["q/A"], torch.tensor([[42.5], [60.0]]))


def test_rbla_slot_nobody_held_keeps_its_value():
    m = make("rbla", [1, 1], R=3, modules=[ModuleSpec("q", 2, 3)])
    state = random_state(m)
    new, _ = run_rounds(m, [[0, 1]], state=state)
    assert torch.equal(new.tensors["q/B"][:, 1:], state.tensors["q/B"][:, 1:])
    assert torch.equal(new.tensors["q/A"][1:], state.tensors["q/A"][1:])
    assert not torch.equal(new.tensors["q/A"][0], state.tensors["q/A"][0])


@pytest.mark.parametrize("weighting", ["data", "uniform"])
def test_rbla_equal_ranks_is_fedit_bit_for_bit(weighting):
    rbla, fedit = make("rbla", [4] * 5, R=4, weighting=weighting), make("fedit", [4] * 5, R=4, weighting=weighting)
    rounds = [[0, 1, 2], [3, 4], [1, 2, 3, 4]]
    a, _ = run_rounds(rbla, rounds, head={"classifier.weight": torch.ones(2, 3)})
    b, _ = run_rounds(fedit, rounds, head={"classifier.weight": torch.ones(2, 3)})
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k


def test_newer_methods_preset_runs_the_new_methods():
    from sweeps.spec import load_preset
    from sweeps.trials import expand

    trials = expand(load_preset("newer_methods"))
    assert len(trials) == 12 and {"fedsa_lora", "fedex_lora", "rbla"} <= {t.config.method.name for t in trials}
    assert all(t.config.ranks.distribution == "homogeneous" for t in trials if t.config.method.name == "fedex_lora")


# ---- Generic: every registered method ------------------------------------------------------------------
@pytest.mark.parametrize("name", available_methods())
def test_checkpoint_and_resume_equals_uninterrupted(name, tmp_path):
    m = make(name, ranks_for(name, [1, 2, 4, 4]), R=4)
    rounds = [[0, 1, 2], [3, 1], [0, 2, 3]]
    full, _ = run_rounds(m, rounds, head={"classifier.weight": torch.ones(2, 3)})
    part, _ = run_rounds(m, rounds[:2], head={"classifier.weight": torch.ones(2, 3)})
    save_checkpoint(tmp_path, part, {"round": 2})
    loaded, info = load_checkpoint(tmp_path)
    assert info["round"] == 2
    clients = rounds[2]
    starts = [m.client_start(loaded, c, 2) for c in clients]
    resumed = m.aggregate(loaded, starts, [trained(s) for s in starts]).state
    assert resumed.tensors.keys() == full.tensors.keys() and resumed.meta == full.meta
    for k in full.tensors:
        assert torch.equal(resumed.tensors[k], full.tensors[k]), k


@pytest.mark.parametrize("name", ["fedsa_lora", "fedex_lora", "rbla"])
def test_noise_metrics_are_finite_for_the_new_methods(name):
    m = make(name, ranks_for(name, [1, 2, 4]), R=4)
    state, (old, starts, updates, agg) = run_rounds(m, [[0, 1, 2], [2, 0]], state=random_state(m))
    metrics = noise_metrics(m, old, starts, agg)
    assert set(metrics) >= {"init_noise_fn", "init_noise_param", "agg_noise"}
    assert all(math.isfinite(v) and v >= 0 for v in metrics.values()), metrics
    if name == "fedex_lora":  # starts from the global model, aggregates exactly
        assert metrics["init_noise_fn"] < 1e-4 and metrics["init_noise_param"] == 0 and metrics["agg_noise"] < 1e-4
    else:  # FedSA-LoRA starts from the client's own B; both average factors (cross terms)
        assert metrics["agg_noise"] > 1e-3
