"""System heterogeneity (``orchestrator.system_model``): availability, speed, deadline, over-selection, config."""

import math

import pytest
import torch

from core.rng import generator
from orchestrator.config import all_keys, load_config
from orchestrator.methods.registry import available_methods
from orchestrator.run import progress_line
from orchestrator.system_model import (
    DEADLINE,
    OVER_SELECTED,
    UNAVAILABLE,
    USED,
    SystemConfig,
    SystemModel,
    speed_factors,
)
from sweeps.spec import parse_spec
from sweeps.trials import expand
from tests.method_helpers import make, random_state, ranks_for, trained

SMOKE = "configs/tiny_llama_smoke.yaml"


def model(m, work, **cfg):
    return SystemModel(SystemConfig(**cfg), seed=0, num_clients=len(work), clients_per_round=m, work=work)


def test_defaults_keep_every_sampled_client():
    # Prepare
    sm = model(3, [5.0, 1.0, 2.0, 4.0, 3.0, 6.0])
    # Execute
    plan = sm.plan(0, [4, 1, 3])
    # Assert
    assert not SystemConfig().active and sm.num_sampled == 3
    assert plan.sampled == (1, 3, 4) and plan.kept == (1, 3, 4) and set(plan.outcome.values()) == {USED}
    assert plan.sim_seconds == {1: 1.0, 3: 4.0, 4: 3.0} and plan.round_seconds == 4.0


def test_deadline_drops_late_clients_and_the_round_waits_for_it():
    # work x speed x seconds_per_example: client 0: 10*1*0.5=5, 1: 20*1*0.5=10, 2: 30*1*0.5=15, 3: 40*2*0.5=40
    sm = model(4, [10.0, 20.0, 30.0, 40.0], speed="list", speed_factors=(1.0, 1.0, 1.0, 2.0), deadline=12.0,
               seconds_per_example=0.5)
    plan = sm.plan(0, [0, 1, 2, 3])
    assert plan.sim_seconds == {0: 5.0, 1: 10.0, 2: 15.0, 3: 40.0}
    assert plan.kept == (0, 1) and plan.outcome == {0: USED, 1: USED, 2: DEADLINE, 3: DEADLINE}
    assert plan.round_seconds == 12.0  # fewer than m arrived: the server waited until the deadline
    assert plan.counts() == {"sampled": 4, "updates": 2, "dropped_unavailable": 0, "dropped_deadline": 2,
                             "dropped_over_selected": 0}
    on_time = model(2, [10.0, 20.0, 30.0, 40.0], deadline=25.0).plan(0, [0, 1])
    assert on_time.kept == (0, 1) and on_time.round_seconds == 20.0  # m arrived: the round ends at the last one


def test_over_selection_keeps_the_first_m_to_finish_ties_by_client_id():
    # m = 2, over_selection 0.5 -> m' = ceil(3.0) = 3 sampled; finish times 30, 10, 10 (client 2 ties client 1)
    sm = model(2, [30.0, 10.0, 10.0, 1.0], over_selection=0.5)
    assert sm.num_sampled == 3
    plan = sm.plan(0, [0, 1, 2])
    assert plan.kept == (1, 2) and plan.outcome[0] == OVER_SELECTED and plan.round_seconds == 10.0
    tie = model(1, [10.0, 10.0, 10.0], over_selection=1.0).plan(0, [2, 1])
    assert tie.kept == (1,) and tie.outcome == {1: USED, 2: OVER_SELECTED}
    assert model(3, [1.0] * 4, over_selection=1.0).num_sampled == 4  # never more than N


def test_over_selection_with_deadline_and_unavailable_clients():
    # client 0 unavailable, client 3 misses the deadline, of 1, 2, 4 the first m = 2 are kept
    sm = model(2, [1.0, 8.0, 3.0, 50.0, 5.0], availability_per_client=(0.0, 1.0, 1.0, 1.0, 1.0), deadline=20.0,
               over_selection=1.5)
    assert sm.num_sampled == 5
    plan = sm.plan(7, [0, 1, 2, 3, 4])
    assert plan.outcome == {0: UNAVAILABLE, 1: OVER_SELECTED, 2: USED, 3: DEADLINE, 4: USED}
    assert plan.kept == (2, 4) and plan.round_seconds == 5.0 and 0 not in plan.sim_seconds


def test_availability_probability_is_seeded_per_round_and_client():
    sm = model(10, [1.0] * 10, availability=0.3)
    draws = [[sm.available(t, c) for c in range(10)] for t in range(200)]
    again = [[sm.available(t, c) for c in reversed(range(10))][::-1] for t in range(200)]
    assert draws == again  # order of the calls never matters
    rate = sum(map(sum, draws)) / 2000
    assert abs(rate - 0.3) < 0.04  # 2000 Bernoulli(0.3) draws: sd 0.01
    plan = sm.plan(3, list(range(10)))
    assert [c for c, o in plan.outcome.items() if o == UNAVAILABLE] == [c for c in range(10) if not draws[3][c]]
    assert model(2, [1.0] * 3, availability=0.0).plan(0, [0, 2]).kept == ()


def test_availability_trace_lists_clients_per_round_and_repeats(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("round,client\n1,0\n1,2\n3,1\n")  # round 2 lists nobody; period 3
    sm = model(3, [1.0, 2.0, 3.0], availability_trace=str(trace))
    kept = [sm.plan(t, [0, 1, 2]).kept for t in range(6)]
    assert kept == [(0, 2), (), (1,), (0, 2), (), (1,)]
    empty = sm.plan(1, [0, 1, 2])
    assert empty.round_seconds == 0.0 and set(empty.outcome.values()) == {UNAVAILABLE}


def test_speed_factors_are_seeded_per_client():
    lognormal = SystemConfig(speed="lognormal", speed_spread=0.5)
    a, b = speed_factors(lognormal, 0, 5), speed_factors(lognormal, 0, 8)
    assert a == b[:5] and a != speed_factors(lognormal, 1, 5)  # a client's factor does not depend on N
    z = torch.randn(1, generator=generator(0, "system", "speed", -1, 3), dtype=torch.float64).item()
    assert a[3] == math.exp(0.5 * z)
    uniform = speed_factors(SystemConfig(speed="uniform", speed_spread=2.0), 0, 50)
    assert all(1.0 <= s <= 3.0 for s in uniform) and len(set(uniform)) == 50
    assert speed_factors(SystemConfig(), 0, 3) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("options, match", [
    ({"availability": 1.5}, r"system.availability=1.5 must be a probability in \[0, 1\]"),
    ({"availability_per_client": (0.5, -0.1)}, r"system.availability_per_client\[1\]=-0.1"),
    ({"speed": "gaussian"}, r"system.speed='gaussian' is not allowed; choose one of \['constant', 'lognormal'"),
    ({"speed": "list"}, "system.speed_factors .* iff system.speed='list'"),
    ({"speed_factors": (1.0, 2.0)}, "iff system.speed='list'"),
    ({"speed": "list", "speed_factors": (1.0, 0.0)}, r"system.speed_factors\[1\]=0.0 must be a finite number > 0"),
    ({"speed_spread": -1.0}, "system.speed_spread=-1.0 must be a finite number >= 0"),
    ({"deadline": 0.0}, "system.deadline=0.0 must be a finite number > 0"),
    ({"over_selection": float("nan")}, "system.over_selection=nan"),
    ({"seconds_per_example": 0}, "system.seconds_per_example=0"),
    ({"availability_trace": "/no/such/trace.csv"}, "system.availability_trace='/no/such/trace.csv' is not a file"),
])
def test_bad_system_options_name_the_field(options, match):
    with pytest.raises(ValueError, match=match):
        SystemConfig(**options)


def test_run_config_checks_per_client_lists_and_trace(tmp_path):
    with pytest.raises(ValueError, match=r"system.speed_factors has 2 entries; give one per client \(data.num_clients"):
        load_config(SMOKE, ["system.speed=list", "system.speed_factors=[1, 2]"])
    trace = tmp_path / "t.csv"
    trace.write_text("round,client\n1,6\n")
    with pytest.raises(ValueError, match=r"line 2: round must be >= 1 and client in \[0, 5\]"):
        load_config(SMOKE, [f"system.availability_trace={trace}"])
    trace.write_text("round,who\n1,1\n")
    with pytest.raises(ValueError, match="needs the columns round,client"):
        load_config(SMOKE, [f"system.availability_trace={trace}"])
    with pytest.raises(ValueError, match="unknown config key 'system.dedline'; did you mean 'system.deadline'"):
        load_config(SMOKE, ["system.dedline=3"])


def test_config_section_set_keys_and_fingerprint():
    assert {"system.availability", "system.deadline", "system.over_selection", "system.speed"} <= set(all_keys())
    cfg = load_config(SMOKE, ["system.deadline=30", "system.speed=lognormal", "system.speed_spread=1"])
    assert cfg.system.deadline == 30.0 and cfg.system.speed_spread == 1.0 and cfg.system.active
    plain = load_config(SMOKE)
    explicit = load_config(SMOKE, ["system.availability=1.0"])
    assert plain.fingerprint() == explicit.fingerprint() != cfg.fingerprint()
    assert plain.to_dict()["system"]["deadline"] is None  # config.yaml documents the section


def test_sweeping_a_system_key_gives_one_trial_per_value():
    spec = parse_spec({"base_config": SMOKE, "base": {"rounds": 2},
                       "axes": {"grid": {"system.deadline": [None, 20.0], "system.availability": [1.0, 0.5]},
                                "seeds": [0]}}, source_dir=None)
    trials = expand(spec)
    got = sorted((t.config.system.deadline or 0.0, t.config.system.availability) for t in trials)
    assert got == [(0.0, 0.5), (0.0, 1.0), (20.0, 0.5), (20.0, 1.0)]
    assert len({t.config.fingerprint() for t in trials}) == 4 and len({t.trial_id for t in trials}) == 4


@pytest.mark.parametrize("name", available_methods())
def test_fewer_updates_than_sampled_aggregates_only_those(name):
    """Partial aggregation: starts of 3 clients, updates of 2 == a round that started only those 2."""
    ranks = ranks_for(name, [1, 2, 4, 3], top=2)
    method = make(name, ranks)
    state = random_state(method)
    starts = [method.client_start(state, c, 0) for c in (0, 1, 3)]
    updates = [trained(s) for s in starts]
    partial = method.aggregate(state, starts, updates[:1] + updates[2:])
    fresh = make(name, ranks)
    only = fresh.aggregate(state, [fresh.client_start(state, c, 0) for c in (0, 3)], updates[:1] + updates[2:])
    assert partial.state.tensors.keys() == only.state.tensors.keys()
    for k in partial.state.tensors:
        assert torch.equal(partial.state.tensors[k], only.state.tensors[k]), k
    assert partial.weights == only.weights and set(partial.weights) == {0, 3}


def test_progress_line_says_a_round_had_no_update():
    line = progress_line({"round": 2, "updates": 0, "note": "no client update arrived: global state unchanged"},
                         5, "2/5 rounds, 1.0 s/round, ETA 0m03s")
    assert "(no client update arrived: global state unchanged)" in line
