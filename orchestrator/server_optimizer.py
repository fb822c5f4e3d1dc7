"""Server optimizers on the pseudo-gradient of a round (FedOpt; pure tensor math, no Ray).

Reddi et al., "Adaptive Federated Optimization" (ICLR 2021), Algorithm 2, with the global parameters
``x_t``, the method's aggregate ``a_t`` and the pseudo-gradient ``Delta_t = a_t - x_t`` (elementwise, per
named parameter):

- ``avg``: ``x_{t+1} = a_t`` (FedAvg; the method's aggregate as it is, no tensor is touched);
- ``avgm`` (FedAvgM, Hsu, Qi, Brown 2019, "Measuring the Effects of Non-Identical Data Distribution"):
  ``m_t = momentum * m_{t-1} + Delta_t``, ``x_{t+1} = x_t + lr * m_t``;
- ``adagrad`` / ``yogi`` / ``adam`` (FedAdagrad / FedYogi / FedAdam):
  ``m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t`` and

  - FedAdagrad: ``v_t = v_{t-1} + Delta_t^2``,
  - FedYogi: ``v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)``,
  - FedAdam: ``v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2``,

  then ``x_{t+1} = x_t + lr * m_t / (sqrt(v_t) + tau)``.

Defaults: ``beta1 = 0.9``, ``beta2 = 0.99``, ``tau = 1e-3`` and ``lr = 1e-3`` for the adaptive rules (the
values OpenFedLLM, Ye et al. 2024, uses for federated LoRA), ``lr = 1`` and ``momentum = 0.9`` for FedAvgM.
Initial moments (Algorithm 2): ``m_{-1} = 0`` and ``v_{-1} = tau^2`` (the paper asks ``v_{-1} >= tau^2``);
no bias correction (the paper has none). The moments are created at the first step, so ``avg`` never
adds any. Arithmetic runs in float64; parameters keep their dtype, moments are stored as float32 in the
global state under ``server_opt/m/<name>`` and ``server_opt/v/<name>`` (checkpointed with it, so a
resumed run continues exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SERVER_OPTIMIZERS = ("avg", "avgm", "adam", "yogi", "adagrad")
ADAPTIVE = ("adam", "yogi", "adagrad")
MOMENT_PREFIX = "server_opt/"
DEFAULT_LR = {"avg": 1.0, "avgm": 1.0, "adam": 1e-3, "yogi": 1e-3, "adagrad": 1e-3}  # OpenFedLLM's LoRA defaults


def moment_key(kind: str, name: str) -> str:
    """State key of moment ``kind`` (``"m"`` or ``"v"``) of parameter ``name``."""
    return f"{MOMENT_PREFIX}{kind}/{name}"


@dataclass(frozen=True)
class ServerOptimizer:
    """One server update rule and its hyper-parameters (``lr`` is the server learning rate ``eta``)."""

    name: str = "avg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def step(self, x: Tensor, delta: Tensor, m: Tensor | None, v: Tensor | None
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One step on one tensor: ``(x_{t+1}, m_t, v_t)`` from ``x_t``, ``Delta_t`` and the previous moments.

        ``m`` / ``v`` are ``None`` before the first step (then ``m_{-1} = 0``, ``v_{-1} = tau^2``). All in
        float64; the caller casts. ``avg`` returns ``x + Delta`` (only for completeness: the state-level
        :func:`step_parameters` never calls it).
        """
        x, delta = x.to(torch.float64), delta.to(torch.float64)
        m = torch.zeros_like(x) if m is None else m.to(torch.float64)
        if self.name == "avg":
            return x + delta, None, None
        if self.name == "avgm":
            m = self.momentum * m + delta
            return x + self.lr * m, m, None
        v = torch.full_like(x, self.tau ** 2) if v is None else v.to(torch.float64)
        m = self.beta1 * m + (1.0 - self.beta1) * delta
        sq = delta * delta
        if self.name == "adagrad":
            v = v + sq
        elif self.name == "yogi":
            v = v - (1.0 - self.beta2) * sq * torch.sign(v - sq)
        elif self.name == "adam":
            v = self.beta2 * v + (1.0 - self.beta2) * sq
        else:
            raise ValueError(f"method.server_optimizer={self.name!r} is not allowed; choose one of "
                             f"{list(SERVER_OPTIMIZERS)}")
        return x + self.lr * m / (v.sqrt() + self.tau), m, v


def step_parameters(opt: ServerOptimizer, old: dict[str, Tensor], aggregate: dict[str, Tensor],
                    moments: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Step every named parameter: ``x = old[name]``, ``Delta = aggregate[name] - x``.

    ``moments`` holds the previous moments by :func:`moment_key` (empty before the first step). Returns
    the new parameters (each in the dtype of ``aggregate[name]``) and the new moments (float32). Nothing
    is modified in place. Parameters are processed in sorted-name order (deterministic).
    """
    if set(old) != set(aggregate):
        raise ValueError(f"the server optimizer needs the same parameters before and after aggregation; "
                         f"only before: {sorted(set(old) - set(aggregate))[:4]}, only after: "
                         f"{sorted(set(aggregate) - set(old))[:4]}")
    params: dict[str, Tensor] = {}
    new_moments: dict[str, Tensor] = {}
    for name in sorted(old):
        x, a = old[name], aggregate[name]
        if x.shape != a.shape:
            raise ValueError(f"server optimizer: parameter {name!r} changed shape in aggregation "
                             f"({tuple(x.shape)} -> {tuple(a.shape)})")
        m, v = moments.get(moment_key("m", name)), moments.get(moment_key("v", name))
        for prev in (m, v):
            if prev is not None and prev.shape != x.shape:
                raise ValueError(f"server optimizer: the moment of {name!r} has shape {tuple(prev.shape)}, the "
                                 f"parameter {tuple(x.shape)} (a checkpoint of another configuration?)")
        x_new, m_new, v_new = opt.step(x, a.to(torch.float64) - x.to(torch.float64), m, v)
        params[name] = x_new.to(a.dtype)
        if m_new is not None:
            new_moments[moment_key("m", name)] = m_new.to(torch.float32)
        if v_new is not None:
            new_moments[moment_key("v", name)] = v_new.to(torch.float32)
    return params, new_moments
