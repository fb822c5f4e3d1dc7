"""Export a global model as a PEFT LoRA adapter folder, loadable with ``PeftModel.from_pretrained``.

:func:`export_adapter` writes the folder from the global state alone (the factors, the module names and the
head), without a base model: ``adapter_config.json`` is PEFT's own ``LoraConfig`` serialisation and
``adapter_model.safetensors`` holds the tensors under the names PEFT's ``save_pretrained`` gives them
(``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``, and ``base_model.model.<head param>`` for the
``modules_to_save`` head). Each target module gets a LoRA of the delta's rank with ``lora_alpha = scale * r``
(PEFT's scaling ``lora_alpha / r`` equals the method's one-rank scale; ``rank_pattern``/``alpha_pattern`` where
modules differ). A low-rank global delta is written as is (FlexLoRA's global is stored exactly as its SVD
factors, so it is exact too). A dense global delta (FLoRA's merged ``dW``) is written as its thin SVD
``U S V^T`` truncated at singular values below ``rel_tol * S_max`` (``B = U S``, ``A = V^T``, scale 1): the same
function within float tolerance. :func:`export_adapter_peft` is the same export through PEFT on a loaded base
model (PEFT's ``get_peft_model`` + ``save_pretrained``), the reference the factor-only files are tested against.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from core.wire import DenseDelta, LowRankDelta

if TYPE_CHECKING:
    from workers.models import LoadedModel

TASK_TYPES = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM"}
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def to_low_rank(delta: LowRankDelta | DenseDelta, rel_tol: float = 1e-6) -> LowRankDelta:
    """The delta as low-rank factors: as is, or the truncated thin SVD of a dense delta."""
    if isinstance(delta, LowRankDelta):
        return delta
    U, S, Vh = torch.linalg.svd(delta.W.to(torch.float64), full_matrices=False)
    keep = max(1, int((S > rel_tol * S.max().clamp_min(1e-300)).sum()))
    return LowRankDelta((U[:, :keep] * S[:keep]).to(torch.float32), Vh[:keep].to(torch.float32), 1.0)


def lora_config(factors: dict[str, LowRankDelta], head: dict[str, Tensor] | None, task: str) -> Any:
    """PEFT ``LoraConfig`` of the export: per-module ranks, ``lora_alpha = scale * r``, head in ``modules_to_save``."""
    from peft import LoraConfig

    if task not in TASK_TYPES:
        raise ValueError(f"task={task!r} is not allowed; choose one of {list(TASK_TYPES)}")
    if not factors:
        raise ValueError("export needs at least one target module delta")
    ranks = {m: f.rank for m, f in factors.items()}
    r = max(ranks.values())
    first = next(iter(factors.values()))
    head_modules = sorted({n.rsplit(".", 1)[0] for n in (head or {})})
    return LoraConfig(
        r=r, lora_alpha=first.scale * r, target_modules=sorted(factors), lora_dropout=0.0, bias="none",
        rank_pattern={m: k for m, k in ranks.items() if k != r},
        alpha_pattern={m: f.scale * f.rank for m, f in factors.items() if f.scale * f.rank != first.scale * r},
        modules_to_save=head_modules or None, init_lora_weights=False, task_type=TASK_TYPES[task])


def export_adapter(deltas: dict[str, LowRankDelta | DenseDelta], head: dict[str, Tensor] | None,
                   task: str) -> dict[str, bytes]:
    """PEFT adapter files (``adapter_config.json``, ``adapter_model.safetensors``) of ``W0 + deltas`` (+ head).

    No base model is needed: the files depend only on the factors, the module names and the head. ``task`` is
    ``classification`` (PEFT task ``SEQ_CLS``) or ``causal_lm`` (``CAUSAL_LM``). Tensors are written as
    contiguous float32 (PEFT casts them to the loaded model's dtype).
    """
    from safetensors.torch import save

    factors = {m: to_low_rank(d) for m, d in deltas.items()}
    config = lora_config(factors, head, task)
    tensors: dict[str, Tensor] = {}
    for m, f in factors.items():
        tensors[f"{PEFT_PREFIX}{m}.lora_A.weight"] = f.A.detach().to("cpu", torch.float32).contiguous()
        tensors[f"{PEFT_PREFIX}{m}.lora_B.weight"] = f.B.detach().to("cpu", torch.float32).contiguous()
    for name, value in (head or {}).items():
        tensors[f"{PEFT_PREFIX}{name}"] = value.detach().to("cpu", torch.float32).contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        config_bytes = (Path(tmp) / CONFIG_FILE).read_bytes()
    return {CONFIG_FILE: config_bytes, WEIGHTS_FILE: save(tensors, metadata={"format": "pt"})}


def export_adapter_peft(loaded: LoadedModel, deltas: dict[str, LowRankDelta | DenseDelta],
                        head: dict[str, Tensor] | None = None) -> dict[str, bytes]:
    """The same adapter through PEFT on ``loaded``, a freshly loaded base model (wrapped by PEFT here).

    PEFT's ``get_peft_model`` wraps the model, the factors and the head are copied in and ``save_pretrained``
    writes the folder. Needs the whole base model in memory; :func:`export_adapter` does not.
    """
    from peft import get_peft_model

    factors = {m: to_low_rank(d) for m, d in deltas.items()}
    peft_model = get_peft_model(loaded.model, lora_config(factors, head, loaded.task))
    modules = dict(peft_model.base_model.model.named_modules())
    with torch.no_grad():
        for m, f in factors.items():
            layer = modules[m]
            layer.lora_A["default"].weight.copy_(f.A)
            layer.lora_B["default"].weight.copy_(f.B)
            if abs(layer.scaling["default"] - f.scale) > 1e-9 * max(1.0, f.scale):
                raise RuntimeError(f"PEFT scaling {layer.scaling['default']} != {f.scale} on {m}")
        params = dict(peft_model.named_parameters())
        for name, value in (head or {}).items():
            module, leaf = name.rsplit(".", 1)
            key = next(k for k in params if k.endswith(f"{module}.modules_to_save.default.{leaf}"))
            params[key].copy_(value)
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def write_adapter(files: dict[str, bytes], folder: Path) -> None:
    """Write adapter files (from :func:`export_adapter`) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
