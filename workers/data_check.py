"""Check the data of a run before any worker starts: the file, its columns and cells, the split, the labels.

:func:`check_data` builds the run's federated split exactly as every worker will (:func:`workers.partition.
load_federated`, a pure function of the data config and the seed), in the launching process, so a bad file
or a split that leaves a client without examples fails in seconds with the field and the file named. File
problems that the readers report without naming the file (a folder, an empty or binary file, text that is
not UTF-8, a CSV that does not parse) become :class:`DataFileError` naming ``data.path``.

:func:`data_warnings` finds legal but suspicious labels: one class only, a class with a handful of
examples, and a class of one or two examples whose name is close to another class's (a label typo that
became a class of its own).
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from pathlib import Path

from workers.data_config import DataConfig
from workers.partition import FederatedData, PartitionWarning, load_federated

TEXT_FILES = ("csv", "jsonl")
FEW_EXAMPLES = 5  # a class with at most this many examples is reported
TYPO_EXAMPLES = 2  # ... and, with at most this many and a name close to another class's, as a likely typo
TYPO_SIMILARITY = 0.75  # difflib ratio above which two label names count as close


class DataFileError(ValueError):
    """A data file that cannot be read as the configured data set; the message names ``data.path``."""


def check_data(cfg: DataConfig, seed: int) -> FederatedData:
    """The federated split every worker of the run will build; raises naming the field or the file."""
    if cfg.dataset in TEXT_FILES and cfg.path:
        _check_text_file(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartitionWarning)  # the workers report the split's notes
        try:
            fed = load_federated(cfg, seed)
        except UnicodeDecodeError as err:
            raise DataFileError(_where(cfg) + f" is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} "
                                f"at offset {err.start}); save it as UTF-8") from None
        except (IsADirectoryError, NotADirectoryError, PermissionError) as err:
            raise DataFileError(_where(cfg) + f" cannot be read: {err.strerror}") from None
        except ValueError as err:
            if cfg.path and str(cfg.path) not in str(err) and str(Path(cfg.path).expanduser()) not in str(err):
                raise DataFileError(f"{err} (data.path={cfg.path!r})") from None
            raise
        except Exception as err:
            if type(err).__module__.startswith("pandas"):  # ParserError, EmptyDataError: they name no file
                raise DataFileError(_where(cfg) + f" is not a valid {cfg.dataset.upper()} file: {err}") from None
            raise
    if fed.task == "classification" and fed.num_labels < 2:
        raise DataFileError(f"{_where(cfg)}: data.label_column holds only one class {fed.label_names}; "
                            "classification needs at least 2 classes")
    return fed


def _where(cfg: DataConfig) -> str:
    return f"data.path={cfg.path!r}" if cfg.path else f"data.dataset={cfg.dataset!r}"


def _check_text_file(cfg: DataConfig) -> None:
    path = Path(str(cfg.path)).expanduser()
    if not path.exists():
        raise DataFileError(f"data.path={cfg.path!r} does not exist (data.dataset={cfg.dataset!r} needs a file)")
    if path.is_dir():
        raise DataFileError(f"data.path={cfg.path!r} is a folder; data.dataset={cfg.dataset!r} needs one "
                            f"{cfg.dataset.upper()} file")
    with open(path, "rb") as f:
        head = f.read(65536)
    if not head.strip():
        raise DataFileError(f"data.path={cfg.path!r} is empty; a {cfg.dataset.upper()} file needs a header row "
                            "and one row per example" if cfg.dataset == "csv" else
                            f"data.path={cfg.path!r} is empty; a JSONL file needs one JSON object per line")
    rows = [line for line in head.splitlines() if line.strip()]
    if cfg.dataset == "csv" and len(rows) == 1 and path.stat().st_size <= len(head):
        raise DataFileError(f"data.path={cfg.path!r} has a header row but no examples (one row per example is needed)")
    if b"\x00" in head:
        raise DataFileError(f"data.path={cfg.path!r} is a binary file (it holds NUL bytes), not "
                            f"{cfg.dataset.upper()} text")


def data_warnings(fed: FederatedData) -> list[str]:
    """Legal but suspicious labels of a classification split (see the module docstring); empty otherwise."""
    if fed.task != "classification":
        return []
    examples = [ex for c in fed.clients for ex in (*c.train, *c.test)] + list(fed.global_test)
    counts = Counter(ex.label for ex in examples)
    names = fed.label_names
    present = [k for k in range(len(names)) if counts.get(k, 0) > 0]
    out = []
    if len(present) == 1:
        out.append(f"every example has the label {names[present[0]]!r} (one class only): any model scores "
                   "100% accuracy; check data.label_column")
        return out
    for k in present:
        n, name = counts[k], names[k]
        others = [names[j] for j in present if j != k and counts[j] > n]
        close = difflib.get_close_matches(name, others, n=1, cutoff=TYPO_SIMILARITY)
        if n <= TYPO_EXAMPLES and close:
            out.append(f"label {name!r} has {n} example{'s' if n > 1 else ''} and looks like a typo of {close[0]!r} "
                       f"({counts[names.index(close[0])]} examples); it is a class of its own")
        elif n <= FEW_EXAMPLES:
            out.append(f"label {name!r} has only {n} example{'s' if n > 1 else ''} of {len(examples)}; the model "
                       "can hardly learn it and its test scores are noise")
    return out
