"""Run configuration: defaults, YAML, --set overrides, and clear errors before any work."""

import pytest

from orchestrator.config import RunConfig, all_keys, load_config
from orchestrator.run import RunSetupError, prepare_out_dir


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["method.name=flora", "data.num_clients=20", "participation=0.25",
                             "model.target_modules=[query, value, intermediate.dense]", "ranks.max_rank=8"])
    assert cfg.method.name == "flora" and cfg.data.num_clients == 20 and cfg.clients_per_round == 5
    assert cfg.model.target_modules == ("query", "value", "intermediate.dense")
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 3\nmethod:\n  name: hetlora\n  hetlora_gamma: 0.9\n")
    cfg = load_config(path, ["rounds=4"])
    assert (cfg.rounds, cfg.method.name, cfg.method.hetlora_gamma) == (4, "hetlora", 0.9)
    assert load_config(None).to_dict() == RunConfig().to_dict()


@pytest.mark.parametrize("override, match", [
    ("method.nmae=flora", r"unknown config key 'method.nmae'; did you mean 'method.name'"),
    ("roundz=3", r"did you mean 'rounds'"),
    ("participation=0", r"participation=0.0 must be in \(0, 1\]"),
    ("participation=1.5", r"participation=1.5 must be in \(0, 1\]"),
    ("eval_every=0", "eval_every=0 must be an integer >= 1"),
    ("method.selection=greedy", r"method.selection='greedy' is not allowed; choose one of \['random'"),
    ("ranks.distribution=zipf", r"ranks.distribution='zipf'"),
    ("method.name=fedplra", r"method.name='fedplra' is not allowed; choose one of \['fedex_lora', 'fedit', 'fedplora'"),
    ("data.global_test_size=0", r"data.global_test_size=0 must be >= 1: a run evaluates the global model"),
])
def test_bad_values_name_the_field(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_unknown_yaml_key_suggests_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'train.learning_rate'"):
        load_config(path)


def test_zero_clients_sampled_is_an_error():
    with pytest.raises(ValueError, match="samples 0 clients per round; use participation >= 0.2"):
        load_config(None, ["data.num_clients=5", "participation=0.1"])


def test_out_dir_holding_a_run_is_refused_unless_resume_or_overwrite(tmp_path):
    cfg = load_config(None, ["rounds=2"])
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "config.yaml").write_text("rounds: 2\n")
    (out / "checkpoint" / "state.json").write_text('{"round": 1}')  # it finished a round (else it is replaced)
    with pytest.raises(RunSetupError, match="already holds files of another run; pass --resume"):
        prepare_out_dir(out, cfg, resume=False, overwrite=False)
    assert prepare_out_dir(out, cfg, resume=False, overwrite=True) == cfg
    assert not out.exists()


def test_resume_with_a_different_config_is_refused(tmp_path):
    from orchestrator.outputs import write_config

    cfg = load_config(None, ["rounds=2"])
    out = tmp_path / "run"
    write_config(out, cfg.to_dict(), cfg.fingerprint())
    assert prepare_out_dir(out, None, resume=True, overwrite=False) == cfg
    other = load_config(None, ["rounds=2", "method.name=flora"])
    with pytest.raises(RunSetupError, match=r"different config \(changed: method.name: 'fedplora' -> 'flora'\)"):
        prepare_out_dir(out, other, resume=True, overwrite=False)
    longer = load_config(None, ["rounds=5"])  # more rounds is not a different experiment
    assert prepare_out_dir(out, longer, resume=True, overwrite=False).rounds == 5
    with pytest.raises(RunSetupError, match="no run there"):
        prepare_out_dir(tmp_path / "nothing", None, resume=True, overwrite=False)


# RunConfig().fingerprint() as computed before resources.clients_per_worker existed: run folders written then
# must stay resumable (exclude=(): the whole config, resources included; the sweep hash excludes resources)
DEFAULT_FINGERPRINTS = {None: "4f6b77954a3aa643", (): "9f5b287f84ee199c", ("resources",): "1bb38f463384d578"}


def test_clients_per_worker_enters_the_fingerprint_only_when_not_1(tmp_path):
    for exclude, fingerprint in DEFAULT_FINGERPRINTS.items():
        for cfg in (RunConfig(), load_config(None, ["resources.clients_per_worker=1"])):
            assert (cfg.fingerprint() if exclude is None else cfg.fingerprint(exclude)) == fingerprint
    packed = load_config(None, ["resources.clients_per_worker=2"])
    assert packed.resources.clients_per_worker == 2
    for exclude in ((), ("resources",), ("rounds", "resources", "eval_every", "checkpoint_every")):
        assert packed.fingerprint(exclude) not in DEFAULT_FINGERPRINTS.values()
        assert packed.fingerprint(exclude) != load_config(None, ["resources.clients_per_worker=3"]).fingerprint(exclude)
    placed = load_config(None, ["resources.clients_per_worker=2", "resources.num_workers=7"])
    assert placed.fingerprint() == packed.fingerprint()  # the pool's size still never counts
    from orchestrator.outputs import write_config

    out = tmp_path / "run"
    write_config(out, packed.to_dict(), packed.fingerprint())
    with pytest.raises(RunSetupError, match=r"changed: resources.clients_per_worker: 2 -> 1"):
        prepare_out_dir(out, RunConfig(), resume=True, overwrite=False)


def test_every_key_is_listed():
    keys = all_keys()
    assert "method.name" in keys and "train.lr" in keys and "resources.gpus_per_worker" in keys
    assert "resources.clients_per_worker" in keys
