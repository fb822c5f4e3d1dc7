"""Any data set of the Hugging Face hub (``data.dataset: hub``), or a local copy of one, as pandas frames.

Source, through the ``datasets`` library (imported lazily, here only):

- ``data.path`` given (offline; how tests run): a folder written by ``Dataset.save_to_disk`` or
  ``DatasetDict.save_to_disk`` (``load_from_disk``); a data file or a glob of data files (Parquet, CSV, JSON
  Lines; one split, ``train``); or any other folder of data files in the hub's layout
  (``load_dataset(folder)``: split names come from the file names, e.g. ``train-00000.parquet``,
  ``test.parquet``). A single ``Dataset`` (not a ``DatasetDict``) is the split ``train``.
- otherwise ``load_dataset(data.hub_id, name=data.hub_config, revision=data.hub_revision)``: the cluster
  path (downloaded once into the ``datasets`` cache). Offline, a data set that is not in the cache fails
  with a message that says how to point ``data.path`` at a local copy.

Splits: ``data.train_split`` (default ``train``, or the only split) holds the examples shared among the
clients. ``data.test_split`` (optional) is the held-out split the global test set is drawn from, as GLUE's
validation split is; without it the global test set is held out of the train split.

Columns: the options of the CSV path (``workers/data.py``): ``data.text_column`` (default ``text``),
``data.text_pair_column``, ``data.label_column`` (default ``label`` for classification; optional for
causal LM), ``data.target_column`` (causal LM; default ``target``), ``data.group_column``. Label names: a
``ClassLabel`` column's own names (rows labelled ``-1``, the hub's "no label", are dropped); otherwise
:func:`workers.data.encode_labels` over the train and test splits together, so both get one mapping.
``workers.data`` turns the frames into examples with the same column checks as a CSV file.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workers.data_config import DataConfig

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}  # suffix -> builder
SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")  # what Dataset(Dict).save_to_disk writes
NO_LABEL = -1  # a ClassLabel value meaning "no label" (hidden test labels on the hub)


@dataclass(frozen=True)
class HubSplits:
    """The rows of the train split and of the optional test split, ready for ``workers.data``'s columns.

    ``label_column``: the column the labels come from (``None``: unlabelled causal LM); ``label_names``: its
    ``ClassLabel`` names (``None`` when it has none); ``source``: where the rows came from, for messages.
    """

    train: pd.DataFrame
    test: pd.DataFrame | None
    label_column: str | None
    label_names: list[str] | None
    source: str


def read_hub(cfg: DataConfig) -> HubSplits:
    """The train split (and ``cfg.test_split``) of the data set named by ``cfg.path`` or ``cfg.hub_id``."""
    splits, source = open_splits(cfg)
    train_name = _pick_split(splits, cfg.train_split, "data.train_split", source)
    names = [train_name] + ([_pick_split(splits, cfg.test_split, "data.test_split", source)]
                            if cfg.test_split else [])
    label_col = cfg.label_column if cfg.task == "causal_lm" else (cfg.label_column or "label")
    frames = [_frame(splits[name], label_col) for name in names]
    for field, name, frame in zip(("data.train_split", "data.test_split"), names, frames):
        if frame.empty:
            raise ValueError(f"{field}={name!r} of {source} has no rows with a label (a {label_col!r} of "
                             f"{NO_LABEL} is the hub's hidden test label); use another split")
    return HubSplits(train=frames[0], test=frames[1] if len(frames) > 1 else None, label_column=label_col,
                     label_names=_class_names(splits[train_name], label_col), source=f"{source}:{'+'.join(names)}")


def open_splits(cfg: DataConfig) -> tuple[dict[str, Any], str]:
    """``({split name: datasets.Dataset}, source description)`` from ``data.path`` or ``data.hub_id``."""
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is in requirements.txt
        raise ImportError("data.dataset='hub' needs the `datasets` package (pip install datasets)") from err
    if cfg.path:
        return _as_dict(_open_local(datasets, cfg.path, cfg.hub_config)), f"data.path={cfg.path!r}"
    try:
        loaded = datasets.load_dataset(cfg.hub_id, name=cfg.hub_config, revision=cfg.hub_revision)
    except (ConnectionError, FileNotFoundError) as err:
        raise ValueError(
            f"data.hub_id={cfg.hub_id!r} could not be loaded ({type(err).__name__}: {err}). Offline "
            "(HF_DATASETS_OFFLINE / HF_HUB_OFFLINE) only data sets already in the datasets cache load; for a "
            "local copy set data.path to a folder written by Dataset.save_to_disk / DatasetDict.save_to_disk, "
            "a Parquet file, or a glob of Parquet files (e.g. data.path: /data/imdb/train-*.parquet)") from err
    return _as_dict(loaded), f"data.hub_id={cfg.hub_id!r}"


def _open_local(datasets: Any, path: str, config_name: str | None) -> Any:
    """A ``Dataset`` or ``DatasetDict`` from a local path (see the module docstring for the forms)."""
    if glob.has_magic(path):
        files = sorted(glob.glob(str(Path(path).expanduser())))
        if not files:
            raise FileNotFoundError(f"data.path={path!r} matches no files")
        return datasets.load_dataset(_file_format(files, path), data_files={"train": files})
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data.path={path!r} does not exist")
    if p.is_file():
        return datasets.load_dataset(_file_format([str(p)], path), data_files={"train": str(p)})
    if any((p / marker).is_file() for marker in SAVE_TO_DISK_MARKERS):
        return datasets.load_from_disk(str(p))
    try:
        return datasets.load_dataset(str(p), name=config_name)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"data.path={path!r} is neither a folder written by save_to_disk nor a folder of data "
                         f"files ({', '.join(sorted(FILE_FORMATS))}): {err}") from err


def _file_format(files: list[str], path: str) -> str:
    suffixes = {Path(f).suffix for f in files}
    if len(suffixes) != 1 or next(iter(suffixes)) not in FILE_FORMATS:
        raise ValueError(f"data.path={path!r} must name files of one format ({', '.join(sorted(FILE_FORMATS))}); "
                         f"found {sorted(suffixes)}")
    return FILE_FORMATS[suffixes.pop()]


def _as_dict(loaded: Any) -> dict[str, Any]:
    return dict(loaded) if hasattr(loaded, "keys") else {"train": loaded}


def _pick_split(splits: dict[str, Any], name: str | None, field: str, source: str) -> str:
    """The split called ``name`` (``None``: ``train``, else the only split); errors list the splits present."""
    present = sorted(splits)
    if name is None:
        if "train" in splits or len(splits) != 1:
            name = "train"
        else:
            return present[0]
    if name not in splits:
        raise ValueError(f"{field}={name!r} is not a split of {source}; splits present: {present}")
    return name


def _class_names(split: Any, label_col: str | None) -> list[str] | None:
    """The ``ClassLabel`` names of the label column (``None`` when it is not a ``ClassLabel``)."""
    feature = split.features.get(label_col) if label_col else None
    return list(feature.names) if feature is not None and hasattr(feature, "names") else None


def _frame(split: Any, label_col: str | None) -> pd.DataFrame:
    """The split as a DataFrame, without the rows whose ``ClassLabel`` is ``-1`` (no label)."""
    df = split.to_pandas()
    if _class_names(split, label_col) is not None:
        df = df[df[label_col] != NO_LABEL].reset_index(drop=True)
    return df
