"""``data.dataset: hub``: any hub data set, offline through local copies built here with ``datasets`` itself."""

import os
import tempfile

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-test-"))

datasets = pytest.importorskip("datasets")

from workers.data import Example, load_examples  # noqa: E402
from workers.data_config import DataConfig  # noqa: E402
from workers.partition import partition  # noqa: E402

datasets.disable_progress_bars()
LABELS = datasets.ClassLabel(names=["neg", "pos"])


def _reviews(n: int, offset: int = 0, hidden: int = 0) -> "datasets.Dataset":
    """``n`` rows: review text, a ClassLabel (alternating; ``hidden`` trailing rows labelled -1), a topic."""
    rows = {"review": [f"review {i}" for i in range(offset, offset + n)],
            "sentiment": [i % 2 for i in range(n - hidden)] + [-1] * hidden,
            "topic": [f"t{i % 3}" for i in range(n)]}
    features = datasets.Features({"review": datasets.Value("string"), "sentiment": LABELS,
                                  "topic": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture
def saved_dict(tmp_path):
    """A DatasetDict (train 40 rows, validation 10, test 6 with hidden labels) written by save_to_disk."""
    folder = tmp_path / "reviews"
    datasets.DatasetDict({"train": _reviews(40), "validation": _reviews(10, offset=100),
                          "test": _reviews(6, offset=200, hidden=6)}).save_to_disk(str(folder))
    return folder


def _cfg(path, **kw):
    return DataConfig(dataset="hub", path=str(path), text_column="review", label_column="sentiment", **kw)


def test_save_to_disk_dict_uses_classlabel_names_and_test_split_as_heldout(saved_dict):
    pool = load_examples(_cfg(saved_dict, test_split="validation", group_column="topic"))
    assert pool.task == "classification" and pool.label_names == ["neg", "pos"]
    assert len(pool) == 40 and len(pool.heldout) == 10
    assert pool.examples[3] == Example(text="review 3", label=1, group="t0")
    assert pool.heldout[1] == Example(text="review 101", label=1, group="t1")
    # the global test set is drawn from the held-out split, the clients share all 40 train rows
    fed = partition(pool, DataConfig(dataset="hub", path="x", num_clients=4, global_test_size=5,
                                     min_examples_per_client=2), seed=0)
    assert fed.global_test_source == "heldout" and len(fed.global_test) == 5
    assert {e.text for e in fed.global_test} <= {f"review {i}" for i in range(100, 110)}
    assert sum(len(c.train) + len(c.test) for c in fed.clients) == 40


def test_without_test_split_the_train_split_is_the_pool(saved_dict):
    pool = load_examples(_cfg(saved_dict))
    assert len(pool) == 40 and pool.heldout is None and pool.source.endswith(":train")


def test_train_split_by_name(saved_dict):
    pool = load_examples(_cfg(saved_dict, train_split="validation"))
    assert [e.text for e in pool.examples] == [f"review {i}" for i in range(100, 110)]


def test_single_saved_dataset_is_the_train_split(tmp_path):
    _reviews(12).save_to_disk(str(tmp_path / "one"))
    pool = load_examples(_cfg(tmp_path / "one"))
    assert len(pool) == 12 and pool.label_names == ["neg", "pos"]


def test_parquet_glob_and_hub_layout_folder_load_the_same_examples(tmp_path, saved_dict):
    expected = load_examples(_cfg(saved_dict, test_split="validation"))
    folder = tmp_path / "parquet"
    folder.mkdir()
    _reviews(20).to_parquet(str(folder / "train-00000-of-00002.parquet"))
    _reviews(40).select(range(20, 40)).to_parquet(str(folder / "train-00001-of-00002.parquet"))
    _reviews(10, offset=100).to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    from_glob = load_examples(_cfg(str(folder / "train-*.parquet")))
    assert from_glob.examples == expected.examples and from_glob.heldout is None
    from_folder = load_examples(_cfg(folder, test_split="validation"))
    assert from_folder.examples == expected.examples and from_folder.heldout == expected.heldout
    # Parquet keeps the ClassLabel feature in its schema metadata, so the names survive
    assert from_folder.label_names == ["neg", "pos"]


def test_string_labels_share_one_mapping_across_splits(tmp_path):
    # the test split holds only "spam": mapped per split it would become class 0 there
    train = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": ["ham", "spam", "ham", "spam"]})
    test = datasets.Dataset.from_dict({"text": ["e", "f"], "label": ["spam", "spam"]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "d"))
    pool = load_examples(DataConfig(dataset="hub", path=str(tmp_path / "d"), test_split="test"))
    assert pool.label_names == ["ham", "spam"]
    assert [e.label for e in pool.examples] == [0, 1, 0, 1] and [e.label for e in pool.heldout] == [1, 1]


def test_causal_lm_from_instruction_columns(tmp_path):
    rows = {"question": ["2+2?", "Capital of France?"], "answer": [" 4", " Paris"], "cat": ["math", "geo"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "qa"))
    pool = load_examples(DataConfig(dataset="hub", path=str(tmp_path / "qa"), task="causal_lm",
                                    text_column="question", target_column="answer", group_column="cat"))
    assert pool.task == "causal_lm" and pool.label_names == []
    assert pool.examples == [Example(text="2+2?", target=" 4", group="math"),
                             Example(text="Capital of France?", target=" Paris", group="geo")]


def test_missing_hub_id_offline_names_the_field_and_the_local_alternative():
    with pytest.raises(ValueError, match=r"data\.hub_id='someone/not-cached-xyz' could not be loaded.*"
                                         r"set data\.path to a folder written by Dataset\.save_to_disk"):
        load_examples(DataConfig(dataset="hub", hub_id="someone/not-cached-xyz", hub_config="plain",
                                 hub_revision="main"))


def test_missing_column_names_it_and_lists_the_columns(saved_dict):
    with pytest.raises(ValueError, match=r"data\.text_column='body' is not a column of .*columns present: "
                                         r"\['review', 'sentiment', 'topic'\]"):
        load_examples(DataConfig(dataset="hub", path=str(saved_dict), text_column="body",
                                 label_column="sentiment"))


def test_unknown_split_lists_the_splits(saved_dict):
    with pytest.raises(ValueError, match=r"data\.test_split='dev' is not a split of .*splits present: "
                                         r"\['test', 'train', 'validation'\]"):
        load_examples(_cfg(saved_dict, test_split="dev"))
    with pytest.raises(ValueError, match=r"data\.train_split='training' is not a split"):
        load_examples(_cfg(saved_dict, train_split="training"))


def test_split_whose_labels_are_all_hidden_is_an_error(saved_dict):
    with pytest.raises(ValueError, match=r"data\.test_split='test' of .* has no rows with a label"):
        load_examples(_cfg(saved_dict, test_split="test"))


def test_bad_paths_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.path='.*nothing-\*\.parquet' matches no files"):
        load_examples(_cfg(str(tmp_path / "nothing-*.parquet")))
    with pytest.raises(FileNotFoundError, match=r"data\.path='.*absent' does not exist"):
        load_examples(_cfg(tmp_path / "absent"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(dataset="hub"), r"data\.dataset='hub' needs data\.hub_id .* or data\.path"),
    (dict(dataset="csv", path="x.csv", hub_id="a/b"), r"data\.hub_id='a/b' is only allowed with data\.dataset='hub'"),
    (dict(test_split="test"), r"data\.test_split='test' is only allowed with data\.dataset='hub'"),
    (dict(dataset="hub", hub_id=""), r"data\.hub_id='' must be a non-empty string"),
    (dict(dataset="hub", hub_id="a/b", test_split="train"), r"data\.test_split='train' must differ"),
    (dict(dataset="hub", hub_id="a/b", partition="natural"), r"needs data\.group_column"),
])
def test_hub_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_hub_supports_both_tasks():
    assert DataConfig(dataset="hub", hub_id="a/b").task == "classification"
    assert DataConfig(dataset="hub", hub_id="a/b", task="causal_lm").task == "causal_lm"
