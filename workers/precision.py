"""GPU readiness of local training: autocast, gradient checkpointing, peak memory, a clear out-of-memory error.

- ``train.autocast: bf16|fp16`` runs forward passes under :func:`torch.autocast`: the frozen base's matmuls
  compute in low precision, while the adapter and head parameters, their gradients, the optimizer state
  and the loss stay float32 (autocast casts per op; parameters are never converted). fp16 has a narrow
  exponent range, so its backward pass uses loss scaling (:class:`torch.amp.GradScaler`); bf16 needs none.
- ``train.gradient_checkpointing``: the backbone's layers keep only their inputs and recompute activations
  in the backward pass (transformers' ``gradient_checkpointing_enable``, non-reentrant, which replays the
  forward's RNG state, so dropout masks and results are unchanged).
- Peak GPU memory of every job (``torch.cuda.max_memory_allocated`` since the job began) goes back in the
  ClientUpdate (``peak_memory_bytes``) and into ``clients.csv``.
- A CUDA out-of-memory error becomes :class:`GpuMemoryError`, whose message names the job, the memory it
  had reached, the GPU share the worker holds (``resources.gpus_per_worker``) and what to change.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class GpuMemoryError(RuntimeError):
    """A client job ran out of GPU memory: the message names the share it had and the memory it reached."""


def check_autocast(mode: str, device: torch.device) -> None:
    """Refuse fp16 autocast off CUDA (the CPU autocast path is bf16-only in practice)."""
    if mode == "fp16" and device.type != "cuda":
        raise ValueError(f"train.autocast='fp16' needs a CUDA device (this worker runs on {device.type}); use "
                         "'bf16' or 'off'")


def autocast(mode: str, device: torch.device):
    """The forward-pass context of ``mode`` (``off``: a no-op context, so results are bitwise unchanged)."""
    if mode == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[mode])


def grad_scaler(mode: str, device: torch.device) -> torch.amp.GradScaler | None:
    """Loss scaling for fp16 on CUDA, else ``None`` (plain backward and step)."""
    return torch.amp.GradScaler(device.type) if mode == "fp16" else None


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on transformers' non-reentrant gradient checkpointing on the model or its wrapped backbone."""
    target = getattr(model, "backbone", model)
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise ValueError(f"train.gradient_checkpointing=true: the model {type(target).__name__} does not support "
                         "gradient checkpointing; set it to false")
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5 name
        target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window on a CUDA device (nothing elsewhere)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    """Peak allocated GPU memory since :func:`reset_peak` (``None`` off CUDA)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def oom_message(label: str, peak: int | None, share: float | None, total: int | None) -> str:
    """What a user needs after an out-of-memory error: the job, the memory reached, the share held, the fixes."""
    gib = 2 ** 30
    reached = f"after reaching {peak / gib:.2f} GiB" if peak is not None else "(peak unknown)"
    held = (f"its share resources.gpus_per_worker={share:g} of a {total / gib:.1f} GiB GPU "
            f"(~{share * total / gib:.1f} GiB)" if share is not None and total else "its GPU share")
    return (f"{label} ran out of GPU memory {reached}; the worker holds {held}. Raise resources.gpus_per_worker "
            "(fewer workers per GPU), or lower train.batch_size / data.max_length, or set "
            "train.gradient_checkpointing: true or train.autocast: bf16.")


def assigned_gpu_share() -> float | None:
    """The GPU fraction Ray assigned to this actor (``None`` outside Ray or without a GPU)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        share = ray.get_runtime_context().get_assigned_resources().get("GPU")
        return float(share) if share else None
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return None


def gpu_total(device: torch.device) -> int | None:
    """Total memory of a CUDA device in bytes (``None`` elsewhere)."""
    return int(torch.cuda.get_device_properties(device).total_memory) if device.type == "cuda" else None


def out_of_memory(label: str, device: torch.device) -> GpuMemoryError:
    """The :class:`GpuMemoryError` for a job that just ran out of memory on ``device``."""
    return GpuMemoryError(oom_message(label, peak_bytes(device), assigned_gpu_share(), gpu_total(device)))


def oom_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "out of GPU memory" in this torch."""
    found: list[Any] = [getattr(torch.cuda, "OutOfMemoryError", None), getattr(torch, "OutOfMemoryError", None)]
    return tuple(dict.fromkeys(t for t in found if isinstance(t, type)))
