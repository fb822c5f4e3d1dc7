"""Federated LoRA methods (pure torch, no Ray), registered by name."""

from orchestrator.methods.base import FederatedMethod
from orchestrator.methods.registry import available_methods, check_method_name, method_class, register

__all__ = ["FederatedMethod", "available_methods", "build_method", "check_method_name", "method_class", "register"]


def build_method(cfg, modules, client_ranks, global_rank, seed) -> FederatedMethod:
    """Instantiate the method named ``cfg.name`` (see :func:`available_methods`)."""
    return method_class(cfg.name)(cfg, modules, client_ranks, global_rank, seed)
