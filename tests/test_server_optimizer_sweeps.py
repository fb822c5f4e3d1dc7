"""Server optimizers and FedProx as sweep axes, and the ablation_server_optimizer preset."""

import pytest

from sweeps.run import main
from sweeps.spec import SweepSpecError, load_preset, parse_spec
from sweeps.trials import expand


def test_preset_crosses_the_heterogeneous_methods_with_server_optimizers(capsys):
    trials = expand(load_preset("ablation_server_optimizer"))
    cells = {(t.label, t.config.method.server_optimizer) for t in trials}
    methods = {"Fed-PLoRA", "FLoRA", "FlexLoRA", "HETLoRA", "pFedLoRA"}
    assert cells == {(m, o) for m in methods for o in ("avg", "avgm", "adam", "yogi")}
    assert len(trials) == len(cells) * 3  # seeds
    assert main(["--list-presets"]) == 0
    assert "ablation_server_optimizer" in capsys.readouterr().out.split()


def test_both_options_are_variant_and_grid_keys():
    spec = parse_spec({"base": {}, "axes": {
        "variants": [{"label": "FedProx", "set": {"train.prox_mu": 0.01}},
                     {"label": "FedAdam", "set": {"method.server_optimizer": "adam"}}],
        "grid": {"method.server_lr": [0.01, 0.1]}}})
    got = {(t.label, t.config.method.server_optimizer, t.config.method.server_lr, t.config.train.prox_mu)
           for t in expand(spec)}
    assert got == {("FedProx", "avg", 0.01, 0.01), ("FedProx", "avg", 0.1, 0.01),
                   ("FedAdam", "adam", 0.01, 0.0), ("FedAdam", "adam", 0.1, 0.0)}
    grid = parse_spec({"base": {}, "axes": {"grid": {"method.server_optimizer": ["avg", "yogi"],
                                                     "train.prox_mu": [0.0, 0.1]}}})
    assert {(t.config.method.server_optimizer, t.config.train.prox_mu) for t in expand(grid)} == {
        ("avg", 0.0), ("avg", 0.1), ("yogi", 0.0), ("yogi", 0.1)}


@pytest.mark.parametrize("grid, match", [
    ({"method.server_optimizer": ["avg", "sgd"]}, r"method.server_optimizer='sgd' is not allowed; choose one of"),
    ({"train.prox_mu": [-1]}, r"train.prox_mu=-1.0 must be a number >= 0"),
    ({"method.server_beta2": [1.0]}, r"method.server_beta2=1.0 must be a number in \[0, 1\)"),
])
def test_bad_values_fail_before_any_trial(grid, match):
    with pytest.raises(SweepSpecError, match=match):
        expand(parse_spec({"base": {}, "axes": {"grid": grid}}))
