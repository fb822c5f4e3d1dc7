"""Check a model config without loading weights: the model exists, and its target modules and their shapes.

:func:`model_module_specs` reads the checkpoint's ``config.json`` (a local folder, a built-in asset, or the
hub's cached copy) and builds the model's skeleton on PyTorch's ``meta`` device (shapes, no memory, no
weights), exactly as :func:`workers.models.load_model` would build it (same head, same pooling), then
matches ``model.target_modules`` against it with the loader's own rule
(:func:`workers.models.target_module_specs`). A missing model, a bad path or a target the model lacks
raises ``ValueError`` naming ``model.name`` / ``model.target_modules``, in the launching process and in a
second or so, instead of after every worker has loaded the weights.

It returns ``None`` (cannot check cheaply) only for ``smollm2`` before its first conversion from GGUF
(the config is inside the GGUF file; the workers check it when they convert it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.wire import ModuleSpec
from workers.models import (
    BUILTIN_MODELS,
    DEFAULT_TARGETS,
    MeanPoolingClassifier,
    ModelConfig,
    _family,
    _head_names,
    _offline,
    _resolve_source,
    _tiny_llama,
    available_linear_names,
    cache_root,
    sentence_transformer_pooling,
    target_module_specs,
)


def model_module_specs(cfg: ModelConfig, task: str, num_labels: int | None) -> list[ModuleSpec] | None:
    """``ModuleSpec`` of every target module of ``cfg`` for ``task``, from the model's skeleton (no weights)."""
    if cfg.name == "smollm2" and not (cache_root() / "smollm2" / "config.json").is_file():
        return None
    if cfg.name == "minilm" and task != "classification":
        raise ValueError("model.name='minilm' is an encoder: it supports task 'classification' only; use "
                         "model.name='smollm2' or 'tiny-llama' (or a causal LM checkpoint) for data.task='causal_lm'")
    labels = int(num_labels or 2)
    with torch.device("meta"):
        if cfg.name == "tiny-llama":
            model = _tiny_llama(task, labels, task == "classification" and cfg.pooling == "mean")[0]
        else:
            model = _skeleton(cfg, task, labels)
    family = _family(model.config.model_type)
    targets = cfg.target_modules or DEFAULT_TARGETS.get(family)
    if targets is None:
        raise ValueError(f"model.target_modules is required for model type {model.config.model_type!r} "
                         f"(no default); available linear modules: {available_linear_names(model)}")
    head = _head_names(model) if task == "classification" else ()
    return target_module_specs(model, targets, exclude=tuple(n.rsplit(".", 1)[0] for n in head))


def _skeleton(cfg: ModelConfig, task: str, num_labels: int) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    source = _resolve_source(cfg.name)
    looks_like_path = cfg.name.startswith(("/", "./", "../", "~")) or Path(cfg.name).suffix in (".bin", ".safetensors")
    if looks_like_path and not Path(source).exists():
        raise ValueError(f"model.name={cfg.name!r}: no such folder; give a checkpoint folder (with config.json), "
                         f"a hub id or one of {list(BUILTIN_MODELS)}")
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise ValueError(f"model.name={cfg.name!r} is a folder without config.json; give a Hugging Face checkpoint "
                         "folder (config.json + weights), a hub id or one of " + str(list(BUILTIN_MODELS)))
    if Path(source).is_file():
        raise ValueError(f"model.name={cfg.name!r} is a file; give a checkpoint folder, a hub id or one of "
                         f"{list(BUILTIN_MODELS)}")
    try:
        config = AutoConfig.from_pretrained(source, **({"local_files_only": True} if _offline() else {}))
    except (OSError, ValueError) as err:
        if _offline() and not Path(source).exists():
            raise ValueError(f"model.name={cfg.name!r} is not a local path and the model hub is offline "
                             f"(HF_HUB_OFFLINE=1) with no cached copy; use one of {list(BUILTIN_MODELS)}, a local "
                             "checkpoint folder, or go online once to cache it") from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model.name={cfg.name!r} could not be found: {first}") from None
    if task == "classification":
        config.num_labels = num_labels
        pooling = cfg.pooling if cfg.pooling != "auto" else sentence_transformer_pooling(source) or "cls"
        if pooling == "mean":
            return MeanPoolingClassifier(AutoModel.from_config(config), num_labels)
        return AutoModelForSequenceClassification.from_config(config)
    return AutoModelForCausalLM.from_config(config)
