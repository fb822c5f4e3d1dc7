"""Server optimizers (Reddi et al. 2021, Alg. 2; FedAvgM): hand-computed steps and every method's mapping."""

import math

import pytest
import torch
from method_helpers import make, ranks_for, trained

from orchestrator.checkpoint import load_checkpoint, save_checkpoint
from orchestrator.config import load_config
from orchestrator.method_config import MethodConfig
from orchestrator.methods import available_methods
from orchestrator.server_optimizer import MOMENT_PREFIX, SERVER_OPTIMIZERS, ServerOptimizer, step_parameters

F64 = torch.float64
X = torch.tensor([1.0, -2.0], dtype=F64)
AGG = torch.tensor([1.5, -2.5], dtype=F64)  # Delta = (0.5, -0.5), Delta^2 = 0.25
M_PREV = torch.tensor([0.2, 0.2], dtype=F64)
V_PREV = torch.tensor([0.04, 0.36], dtype=F64)  # below and above Delta^2: both signs of Yogi's update
LR, B1, B2, TAU, MOM = 0.1, 0.9, 0.99, 1e-3, 0.8


def opt(name):
    return ServerOptimizer(name, lr=LR, momentum=MOM, beta1=B1, beta2=B2, tau=TAU)


def stepped(name, m=M_PREV, v=V_PREV):
    moments = {} if m is None else {f"{MOMENT_PREFIX}m/x": m, **({} if v is None else {f"{MOMENT_PREFIX}v/x": v})}
    params, new = step_parameters(opt(name), {"x": X}, {"x": AGG}, moments)
    return params["x"], new.get(f"{MOMENT_PREFIX}m/x"), new.get(f"{MOMENT_PREFIX}v/x")


# ---- the update rules, by hand ------------------------------------------------------------------------
def test_avgm_step_by_hand():
    x, m, v = stepped("avgm", v=None)
    # m = 0.8 * 0.2 + 0.5 = 0.66 ; m = 0.8 * 0.2 - 0.5 = -0.34 ; x = x + 0.1 m
    torch.testing.assert_close(m, torch.tensor([0.66, -0.34], dtype=torch.float32))
    torch.testing.assert_close(x, torch.tensor([1.066, -2.034], dtype=F64), rtol=0, atol=1e-12)
    assert v is None


@pytest.mark.parametrize("name, v_expected", [
    ("adam", [0.99 * 0.04 + 0.01 * 0.25, 0.99 * 0.36 + 0.01 * 0.25]),
    ("yogi", [0.04 + 0.01 * 0.25, 0.36 - 0.01 * 0.25]),  # sign(v - D^2) = -1, then +1
    ("adagrad", [0.04 + 0.25, 0.36 + 0.25]),
])
def test_adaptive_step_by_hand(name, v_expected):
    x, m, v = stepped(name)
    m_expected = [0.9 * 0.2 + 0.1 * 0.5, 0.9 * 0.2 - 0.1 * 0.5]  # = 0.23, 0.13
    x_expected = [1.0 + 0.1 * m_expected[0] / (math.sqrt(v_expected[0]) + 1e-3),
                  -2.0 + 0.1 * m_expected[1] / (math.sqrt(v_expected[1]) + 1e-3)]
    torch.testing.assert_close(m, torch.tensor(m_expected, dtype=torch.float32))
    torch.testing.assert_close(v, torch.tensor(v_expected, dtype=torch.float32))
    torch.testing.assert_close(x, torch.tensor(x_expected, dtype=F64), rtol=0, atol=1e-12)


def test_first_adam_step_starts_from_zero_momentum_and_tau_squared():
    x, m, v = stepped("adam", m=None, v=None)
    # m = 0.1 * 0.5 = 0.05 ; v = 0.99e-6 + 0.0025 = 0.00250099 ; x = 1 + 0.1 * 0.05 / (0.0500099 + 0.001)
    assert v[0].item() == pytest.approx(0.00250099, rel=1e-6) and m[0].item() == pytest.approx(0.05)
    assert x[0].item() == pytest.approx(1.0 + 0.005 / (math.sqrt(0.00250099) + 1e-3), rel=1e-12)
    assert x[0].item() == pytest.approx(1.0980200, abs=1e-6)


def test_moment_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="moment of 'x' has shape"):
        step_parameters(opt("adam"), {"x": X}, {"x": AGG}, {f"{MOMENT_PREFIX}m/x": torch.zeros(3)})


# ---- every method ---------------------------------------------------------------------------------------
def method_for(name, optimizer, **cfg):
    return make(name, ranks_for(name, [1, 2, 4]), R=4, server_optimizer=optimizer, **cfg)


HEAD = {"classifier.weight": torch.ones(2, 3), "classifier.bias": torch.zeros(2)}
ROUNDS = [[0, 1], [1, 2], [0, 2]]


def run(method, rounds, state=None, first_round=0):
    state = state or method.init_global(HEAD)
    for t, clients in enumerate(rounds, start=first_round):
        starts = [method.client_start(state, c, t) for c in clients]
        agg = method.aggregate(state, starts, [trained(s) for s in starts])
        state = method.server_step(state, agg.state)
    return state


def dense_global(method, state):
    return {m: d.dense(F64) for m, d in method.global_delta(state).items()}


@pytest.mark.parametrize("name", available_methods())
def test_avg_returns_the_aggregate_itself(name):
    method = method_for(name, "avg")
    state = method.init_global(HEAD)
    starts = [method.client_start(state, c, 0) for c in (0, 1)]
    agg = method.aggregate(state, starts, [trained(s) for s in starts])
    assert method.server_step(state, agg.state) is agg.state  # not a tensor touched, not a copy
    assert not any(k.startswith(MOMENT_PREFIX) for k in run(method, ROUNDS).tensors)


@pytest.mark.parametrize("name", available_methods())
def test_avgm_without_momentum_at_lr_1_is_fedavg(name):
    # along FedAvg's trajectory, each round's FedAvgM step (beta = 0, lr = 1) lands on the aggregate itself
    avg, avgm = method_for(name, "avg"), method_for(name, "avgm", server_momentum=0.0, server_lr=1.0)
    state = avg.init_global(HEAD)
    for t, clients in enumerate(ROUNDS):
        starts = [avg.client_start(state, c, t) for c in clients]
        agg = avg.aggregate(state, starts, [trained(s) for s in starts])
        stepped = avgm.server_step(state, agg.state)
        for m, d in dense_global(avg, agg.state).items():
            torch.testing.assert_close(dense_global(avgm, stepped)[m], d, rtol=0, atol=1e-6)
        torch.testing.assert_close(stepped.head(), agg.state.head(), rtol=0, atol=1e-7)
        assert any(k.startswith(MOMENT_PREFIX) for k in stepped.tensors)
        state = agg.state


@pytest.mark.parametrize("optimizer", [o for o in SERVER_OPTIMIZERS if o != "avg"])
@pytest.mark.parametrize("name", available_methods())
def test_every_method_steps_and_resumes_exactly_from_a_checkpoint(name, optimizer, tmp_path):
    method = method_for(name, optimizer)
    whole = run(method, ROUNDS)
    after_one = run(method, ROUNDS[:1])
    save_checkpoint(tmp_path, after_one, {"round": 1})
    loaded, _ = load_checkpoint(tmp_path)
    resumed = run(method_for(name, optimizer), ROUNDS[1:], state=loaded, first_round=1)
    assert resumed.tensors.keys() == whole.tensors.keys() and resumed.meta == whole.meta
    for k, v in whole.tensors.items():
        assert torch.equal(resumed.tensors[k], v), k
    # the optimizer made a difference: the global model is not FedAvg's
    plain = dense_global(method_for(name, "avg"), run(method_for(name, "avg"), ROUNDS))
    assert any((dense_global(method, whole)[m] - d).abs().max() > 1e-4 for m, d in plain.items())


def test_flexlora_steps_the_dense_product_and_stores_its_svd():
    # Prepare: one round of FlexLoRA, then the same aggregate stepped by Adam
    method = method_for("flexlora", "adam", server_lr=0.05)
    state = method.init_global(HEAD)
    starts = [method.client_start(state, c, 0) for c in (0, 1, 2)]
    agg = method.aggregate(state, starts, [trained(s) for s in starts])

    # Execute
    new = method.server_step(state, agg.state)

    # Assert: dW_new = dW_old + lr m / (sqrt v + tau) with Delta = dW_agg (dW_old = 0), as stored factors
    for m in method.modules:
        B, A = method.factors(agg.state, m)
        delta = method.scale * B.double() @ A.double()
        m1 = 0.1 * delta
        v1 = 0.99 * 1e-6 + 0.01 * delta ** 2
        expected = 0.05 * m1 / (v1.sqrt() + 1e-3)
        torch.testing.assert_close(dense_global(method, new)[m], expected, rtol=0, atol=2e-6)
        d, k = method.modules[m].d_out, method.modules[m].k_in
        assert method.factors(new, m)[1].shape == (min(d, k), k)
        assert new.tensors[f"{MOMENT_PREFIX}m/{m}/dW"].shape == (d, k)


def test_flora_steps_the_dense_dW_and_the_head():
    method = method_for("flora", "yogi")
    state = run(method, ROUNDS[:1])
    starts = [method.client_start(state, c, 1) for c in (1, 2)]
    agg = method.aggregate(state, starts, [trained(s) for s in starts])
    new = method.server_step(state, agg.state)
    for key in [f"{m}/dW" for m in method.modules] + ["head/classifier.weight"]:
        x, a = state.tensors[key].double(), agg.state.tensors[key].double()
        m_prev = state.tensors[f"{MOMENT_PREFIX}m/{key}"].double()
        v_prev = state.tensors[f"{MOMENT_PREFIX}v/{key}"].double()
        delta = a - x
        m = 0.9 * m_prev + 0.1 * delta
        v = v_prev - 0.01 * delta ** 2 * torch.sign(v_prev - delta ** 2)
        torch.testing.assert_close(new.tensors[key].double(), x + 0.001 * m / (v.sqrt() + 1e-3), rtol=0, atol=1e-7)
    assert torch.equal(new.tensors[f"{next(iter(method.modules))}/B_stack"],
                       agg.state.tensors[f"{next(iter(method.modules))}/B_stack"])


def test_ffa_lora_never_steps_its_frozen_A_and_pfedlora_never_its_private_adapters():
    ffa = method_for("ffa_lora", "adam")
    init, state = ffa.init_global(HEAD), run(ffa, ROUNDS)
    for m in ffa.modules:
        assert torch.equal(state.tensors[f"{m}/A"], init.tensors[f"{m}/A"])
        assert f"{MOMENT_PREFIX}m/{m}/A" not in state.tensors and f"{MOMENT_PREFIX}m/{m}/B" in state.tensors
    pfed = method_for("pfedlora", "adam")
    state = run(pfed, ROUNDS[:1])
    starts = [pfed.client_start(state, c, 1) for c in (1, 2)]
    agg = pfed.aggregate(state, starts, [trained(s) for s in starts])
    new = pfed.server_step(state, agg.state)
    private = [k for k in agg.state.tensors if k.startswith("client/")]
    assert private and all(torch.equal(new.tensors[k], agg.state.tensors[k]) for k in private)
    assert not any(k.startswith(f"{MOMENT_PREFIX}m/client/") for k in new.tensors)


# ---- configuration --------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, match", [
    ("method.server_optimizer=sgd", r"method.server_optimizer='sgd' is not allowed; choose one of \['avg', 'avgm'"),
    ("method.server_lr=0", "method.server_lr=0.0 must be a finite number > 0"),
    ("method.server_tau=-1", "method.server_tau=-1.0 must be a finite number > 0"),
    ("method.server_beta1=1.0", r"method.server_beta1=1.0 must be a number in \[0, 1\)"),
    ("method.server_beta2=-0.1", r"method.server_beta2=-0.1 must be a number in \[0, 1\)"),
    ("method.server_momentum=1.5", r"method.server_momentum=1.5 must be a number in \[0, 1\)"),
    ("train.prox_mu=-0.1", "train.prox_mu=-0.1 must be a number >= 0"),
])
def test_bad_values_name_the_field(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_server_lr_defaults_per_optimizer():
    assert MethodConfig(server_optimizer="avgm").server().lr == 1.0
    assert MethodConfig(server_optimizer="yogi").server().lr == 0.001
    assert MethodConfig(server_optimizer="adam", server_lr=0.3).server() == ServerOptimizer("adam", 0.3)


def test_fedex_lora_steps_its_exact_global_model_and_keeps_the_averaged_factors():
    """FedEx-LoRA: the optimizer steps the dense global delta dW + s B A; B, A stay the clients' averages."""
    method = method_for("fedex_lora", "yogi")
    state = method.init_global()
    starts = [method.client_start(state, c, 0) for c in (0, 1, 2)]
    agg = method.aggregate(state, starts, [trained(s) for s in starts])
    plain = method_for("fedex_lora", "avg").aggregate(state, starts, [trained(s) for s in starts]).state
    stepped = method.server_step(state, plain)
    expected, _ = step_parameters(method.server_optimizer, method.server_parameters(state),
                                  method.server_parameters(plain), {})
    for m in method.modules:
        assert torch.equal(stepped.tensors[f"{m}/B"], plain.tensors[f"{m}/B"])
        assert torch.equal(stepped.tensors[f"{m}/A"], plain.tensors[f"{m}/A"])
        torch.testing.assert_close(method.global_delta(stepped)[m].W, expected[f"{m}/effective"], rtol=0, atol=1e-6)
        assert not torch.allclose(method.global_delta(stepped)[m].W, method.global_delta(plain)[m].W)
        assert stepped.tensors[f"{MOMENT_PREFIX}m/{m}/effective"].shape == (method.modules[m].d_out,
                                                                            method.modules[m].k_in)
    assert set(agg.state.tensors) <= set(stepped.tensors)


def test_fedsa_lora_steps_only_the_shared_A():
    """FedSA-LoRA: A is the server's parameter; each client's B and the evaluation-only global B are not."""
    method = method_for("fedsa_lora", "adam")
    state = method.init_global()
    starts = [method.client_start(state, c, 0) for c in (0, 1, 2)]
    plain = method_for("fedsa_lora", "avg").aggregate(state, starts, [trained(s) for s in starts]).state
    stepped = method.server_step(state, plain)
    for key, value in plain.tensors.items():
        if key.endswith("/A"):
            assert not torch.equal(stepped.tensors[key], value), key
            assert f"{MOMENT_PREFIX}m/{key}" in stepped.tensors
        else:
            assert torch.equal(stepped.tensors[key], value), key
    assert not any(k.endswith("/B") for k in stepped.tensors if k.startswith(MOMENT_PREFIX))
