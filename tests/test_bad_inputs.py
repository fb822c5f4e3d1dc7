"""Every bad input gets a clear error before Ray starts; suspicious but legal input gets a warning.

Each case runs the one-run command line (``orchestrator.run.main``) and checks that it exits with 2, that
the message names the field or the file (and what is allowed), that no traceback is printed, and that it
failed before any work: Ray was never started and the output folder was never created.
"""

import os
import stat
from pathlib import Path

import pytest
import ray

from orchestrator.config import load_config
from orchestrator.preflight import check_output_folder, check_run, input_warnings
from orchestrator.run import main

SMOKE = "configs/tiny_llama_smoke.yaml"
CSV_BASE = ["data.dataset=csv", "data.task=classification", "data.num_clients=2", "data.global_test_size=4",
            "data.min_examples_per_client=2", "data.max_examples=null", "participation=1.0", "ranks.max_rank=4",
            "model.name=tiny-llama"]


def reviews(n: int, labels=("negative", "positive")) -> str:
    words = ["good", "bad", "fine", "awful", "great", "dull"]
    rows = [f"review {i} {words[i % len(words)]},{labels[i % len(labels)]}" for i in range(n)]
    return "text,label\n" + "\n".join(rows) + "\n"


@pytest.fixture
def files(tmp_path):
    """Data files with one problem each, by name."""
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "model_dir").mkdir()
    (tmp_path / "afile").write_text("x")
    contents = {
        "good.csv": reviews(40),
        "wrong_columns.csv": reviews(40).replace("text,label", "review,label", 1),
        "empty_text.csv": reviews(40) + ",positive\n",
        "empty_label.csv": reviews(40) + "one more review,\n",
        "header_only.csv": "text,label\n",
        "one_row.csv": "text,label\nonly one review,positive\n",
        "empty.csv": "",
        "one_class.csv": reviews(40, labels=("positive",)),
        "syntax.yaml": "rounds: 2\ntrain: [lr: 1\n",
    }
    for name, text in contents.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "binary.csv").write_bytes(b"text,label\n\x00\x01\x02\x03binary\x00,1\n")
    (tmp_path / "latin1.csv").write_bytes(reviews(40).encode() + "caf\xe9 cr\xe8me,positive\n".encode("latin-1"))
    return tmp_path


def csv_case(name, *extra):
    return ["--set", *" --set ".join([*CSV_BASE, f"data.path={{dir}}/{name}", *extra]).split(" ")]


CASES = {  # id: (arguments after --config SMOKE --out DIR, substrings the message must contain)
    "missing file": (csv_case("nope.csv"), ["data.path=", "nope.csv", "does not exist"]),
    "a folder": (csv_case("folder.csv"), ["data.path=", "folder.csv", "is a folder"]),
    "wrong columns": (csv_case("wrong_columns.csv"), ["data.text_column='text'", "wrong_columns.csv",
                                                      "columns present: ['review', 'label']"]),
    "absent label column": (csv_case("good.csv", "data.label_column=grade"), ["data.label_column='grade'",
                                                                              "good.csv", "columns present"]),
    "empty text cell": (csv_case("empty_text.csv"), ["data.text_column='text'", "1 missing", "empty_text.csv"]),
    "empty label cell": (csv_case("empty_label.csv"), ["data.label_column='label'", "1 missing labels",
                                                       "empty_label.csv"]),
    "header only": (csv_case("header_only.csv"), ["header_only.csv", "no examples"]),
    "one row": (csv_case("one_row.csv"), ["data.num_clients=2", "one_row.csv"]),
    "empty file": (csv_case("empty.csv"), ["empty.csv", "is empty"]),
    "binary file": (csv_case("binary.csv"), ["binary.csv", "binary file"]),
    "not UTF-8": (csv_case("latin1.csv"), ["latin1.csv", "not UTF-8"]),
    "one class": (csv_case("one_class.csv"), ["one_class.csv", "only one class", "at least 2 classes"]),
    "model not found offline": (["--set", "model.name=some-org/not-cached-model"],
                                ["model.name='some-org/not-cached-model'", "offline"]),
    "bad model path": (["--set", "model.name=/no/such/checkpoint"], ["model.name='/no/such/checkpoint'",
                                                                      "no such folder"]),
    "model folder without config": (["--set", "model.name={dir}/model_dir"], ["model_dir", "without config.json"]),
    "target module the model lacks": (["--set", "model.target_modules=[query_missing]"],
                                      ["model.target_modules ['query_missing']", "available linear module names",
                                       "self_attn.q_proj"]),
    "fedit with mixed ranks": (["--set", "method.name=fedit"], ["fedit", "same rank", "homogeneous"]),
    "rank list of the wrong length": (["--set", "ranks.distribution=list", "--set", "ranks.ranks=[1,2]"],
                                      ["ranks.ranks has 2 entries", "6 clients"]),
    "unknown similarity module": (["--set", "metrics.similarity_module=nope"],
                                  ["metrics.similarity_module='nope'", "q_proj"]),
    "a client left without examples": (["--set", "data.num_clients=200"], ["data.num_clients=200", "at least"]),
    "pathological split with too many classes": (
        csv_case("good.csv", "data.partition=pathological", "data.classes_per_client=3"),
        ["data.classes_per_client=3"]),
    "cuda without a GPU": (["--set", "resources.device=cuda"], ["resources.device='cuda'", "no GPUs"]),
    "more workers than CPUs": (["--num-cpus", "2", "--set", "resources.num_workers=3"],
                               ["3 workers", "2", "resources.num_workers"]),
    "out is a file": (["--out", "{dir}/afile"], ["--out", "afile", "is a file"]),
    "out under a file": (["--out", "{dir}/afile/run"], ["afile", "cannot be created"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_refused_before_ray_starts(case, files, capsys):
    args, expected = CASES[case]
    args = [a.replace("{dir}", str(files)) for a in args]
    out = files / "run"
    argv = ["--config", SMOKE, "--out", str(out), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text.replace("{dir}", str(files)) in err, (text, err)
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) <= 4, err
    assert not ray.is_initialized() and not out.exists()


def test_yaml_syntax_error_names_the_line(files, capsys):
    assert main(["--config", str(files / "syntax.yaml"), "--out", str(files / "run")]) == 2
    err = capsys.readouterr().err
    assert "syntax.yaml" in err and "YAML syntax error at line 3" in err and "Traceback" not in err


def test_debug_flag_shows_the_traceback(files, capsys):
    assert main(["--config", SMOKE, "--out", str(files / "run"), "--set", "resources.device=cuda", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("use resources.device='auto' or "
                                                                                  "'cpu' to run on the CPU")


def test_full_or_read_only_disk_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"--out .* the disk holding it is full \([0-9.]+ MiB free"):
        check_output_folder(tmp_path / "run", min_free_bytes=2**62)
    if os.geteuid() != 0:  # root writes through any permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(ValueError, match="is not writable"):
            check_output_folder(locked / "run")
    if Path("/sys").is_dir():  # sysfs refuses new files even to root: a read-only place on any Linux
        with pytest.raises(ValueError, match=r"--out '/sys/hetfedlora-run' is not writable: .* in '/sys'"):
            check_output_folder(Path("/sys/hetfedlora-run"))


# ------------------------------------------------------------------------------------------- warnings
def test_learning_rate_in_exponent_notation_is_a_float(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    assert load_config(path).train.lr == 1e-3
    assert load_config(None, ["train.lr=2e-4"]).train.lr == 2e-4


def test_duplicate_yaml_keys_warn_with_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("rounds: 2\ntrain:\n  lr: 0.1\n  lr: 0.2\nrounds: 3\n")
    with input_warnings() as notes:
        cfg = load_config(path)
    assert cfg.rounds == 3 and cfg.train.lr == 0.2
    assert any("'rounds' appears twice" in n and "lines 1 and 5" in n for n in notes), notes
    assert any("'lr' appears twice" in n and "lines 3 and 4" in n for n in notes), notes


def csv_config(path, *extra):
    return load_config(SMOKE, [*CSV_BASE, f"data.path={path}", *extra])


def test_legal_but_suspicious_labels_warn(tmp_path):
    only_positive = tmp_path / "one_class_ints.csv"
    only_positive.write_text("text,label\n" + "".join(f"review {i},1\n" for i in range(40)))
    notes = check_run(csv_config(only_positive))
    assert any("one class only" in n and "'1'" in n for n in notes), notes

    typo = tmp_path / "typo.csv"
    typo.write_text(reviews(40) + "a typo review,postive\n")
    notes = check_run(csv_config(typo))
    assert any("'postive' has 1 example" in n and "typo of 'positive'" in n for n in notes), notes

    rare = tmp_path / "rare.csv"
    rare.write_text(reviews(40) + "".join(f"mixed review {i},neutral\n" for i in range(3)))
    notes = check_run(csv_config(rare))
    assert any("'neutral' has only 3 examples" in n for n in notes), notes
    assert not any("typo" in n for n in notes)


def test_rank_above_a_layer_width_warns():
    # tiny-llama: q_proj is 64 x 64, v_proj 32 x 64 (2 key-value heads of 16)
    assert check_run(load_config(SMOKE, ["ranks.max_rank=32", "ranks.mid_rank=2"])) == []
    notes = check_run(load_config(SMOKE, ["ranks.max_rank=40", "ranks.mid_rank=2"]))
    assert len(notes) == 1 and "ranks.max_rank=40" in notes[0] and "v_proj" in notes[0] and "(32, 64)" in notes[0]


# ------------------------------------------------------------------------------- the output folder
def test_a_run_that_never_finished_a_round_does_not_block_the_corrected_command(tmp_path):
    from orchestrator.run import RunSetupError, prepare_out_dir

    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "config.yaml").write_text("rounds: 3\nfingerprint: abc\n")
    (out / "checkpoint" / "records.jsonl").write_text('{"round": 0, "rouge_l": 0.0}\n{"round": 1, "rou')
    cfg = load_config(SMOKE)
    assert prepare_out_dir(out, cfg, resume=False, overwrite=False) is cfg and not out.exists()
    # a run with a finished round is kept
    (out / "checkpoint").mkdir(parents=True)
    (out / "config.yaml").write_text("rounds: 3\nfingerprint: abc\n")
    (out / "checkpoint" / "records.jsonl").write_text('{"round": 0}\n{"round": 1}\n')
    with pytest.raises(RunSetupError, match="already holds files of another run"):
        prepare_out_dir(out, cfg, resume=False, overwrite=False)


def test_a_disk_error_mid_run_names_the_file_and_the_resume_command(tmp_path, capsys):
    import errno

    from orchestrator.failures import report_failure, resume_lines

    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.json").write_text('{"round": 4}')
    err = OSError(errno.ENOSPC, "No space left on device", str(out / "rounds.csv"))
    report_failure(err, resume_lines(out))
    text = capsys.readouterr().err
    assert text.splitlines() == [
        f"error: could not write {str(out / 'rounds.csv')!r}: the disk is full (No space left on device)",
        f"the last checkpoint (round 4) in {out} is whole; resume with:",
        f"  python -m orchestrator.run --resume {out}"]


def test_sweep_refuses_a_bad_trial_before_ray_starts(tmp_path, capsys):
    from sweeps.run import main as sweep_main

    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"name: bad\nbase_config: {os.path.abspath(SMOKE)}\naxes:\n  settings:\n"
                    f"    - {{label: ok, set: {{data.partition: iid}}}}\n"
                    f"    - {{label: broken, set: {{model.target_modules: [nope]}}}}\n")
    assert sweep_main(["--config", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1 trial(s) cannot run" in err and "model.target_modules ['nope']" in err and "001-" in err, err
    assert "Traceback" not in err and not ray.is_initialized() and not (tmp_path / "out").exists()
