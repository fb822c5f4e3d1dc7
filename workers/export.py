"""Export a global model as a PEFT LoRA adapter folder, loadable with ``PeftModel.from_pretrained``.

PEFT's own ``save_pretrained`` writes the folder, so its format is PEFT's. Each target module gets a
LoRA of the delta's rank with ``lora_alpha = scale * r`` (PEFT's scaling equals the method's one-rank
scale exactly; ``rank_pattern``/``alpha_pattern`` where modules differ). A low-rank global delta is
written as is (FlexLoRA's global is stored exactly as its SVD factors, so it is exact too). A dense global
delta (FLoRA's merged ``dW``) is written as its thin SVD ``U S V^T`` truncated at singular values below
``rel_tol * S_max`` (``B = U S``, ``A = V^T``, scale 1): the same function within float tolerance.
The classification head is saved through ``modules_to_save``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import Tensor

from core.wire import DenseDelta, LowRankDelta
from workers.models import LoadedModel


def to_low_rank(delta: LowRankDelta | DenseDelta, rel_tol: float = 1e-6) -> LowRankDelta:
    """The delta as low-rank factors: as is, or the truncated thin SVD of a dense delta."""
    if isinstance(delta, LowRankDelta):
        return delta
    U, S, Vh = torch.linalg.svd(delta.W.to(torch.float64), full_matrices=False)
    keep = max(1, int((S > rel_tol * S.max().clamp_min(1e-300)).sum()))
    return LowRankDelta((U[:, :keep] * S[:keep]).to(torch.float32), Vh[:keep].to(torch.float32), 1.0)


def export_adapter(loaded: LoadedModel, deltas: dict[str, LowRankDelta | DenseDelta],
                   head: dict[str, Tensor] | None = None) -> dict[str, bytes]:
    """PEFT adapter files (``adapter_config.json``, ``adapter_model.safetensors``) for ``W0 + deltas``.

    ``loaded`` must be a freshly loaded base model (it gets wrapped by PEFT here).
    """
    factors = {m: to_low_rank(d) for m, d in deltas.items()}
    ranks = {m: f.rank for m, f in factors.items()}
    r = max(ranks.values())
    first = next(iter(factors.values()))
    head_modules = sorted({n.rsplit(".", 1)[0] for n in (head or {})})
    config = LoraConfig(
        r=r, lora_alpha=first.scale * r, target_modules=sorted(factors), lora_dropout=0.0, bias="none",
        rank_pattern={m: k for m, k in ranks.items() if k != r},
        alpha_pattern={m: f.scale * f.rank for m, f in factors.items() if f.scale * f.rank != first.scale * r},
        modules_to_save=head_modules or None, init_lora_weights=False,
        task_type="SEQ_CLS" if loaded.task == "classification" else "CAUSAL_LM")
    peft_model = get_peft_model(loaded.model, config)
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
