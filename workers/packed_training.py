"""Packed local training: the client jobs of one round trained at once on a worker's single copy of the base model.

:func:`train_pack` takes ``k`` client jobs (:class:`core.wire.ClientStart` + local examples) and returns their
updates in the order of the starts. With ``k = 1`` it *is* ``LocalTrainer.train`` (bitwise today's result).
With ``k > 1`` every optimisation step runs one forward and one backward over the concatenation of each
still-active client's batch (rows ``[lo_c, hi_c)`` of the packed batch belong to client ``c``), and every row
sees only its own client's pieces:

- on every target module ``W0 (d, k)`` the output of rows ``c`` is
  ``base(x_c) + sum_a s_{c,a} B_{c,a} A_{c,a} drop_{c,a}(x_c) + B_{f,c} A_{f,c} x_c`` (:func:`packed_lora_forward`):
  the shared frozen base, client ``c``'s named adapters in its start's order (pFedLoRA's private and shared
  adapters both), and its low-rank fold as a frozen branch (Fed-PLoRA's unselected slots,
  ``B_f = [s_1 B_1 ... s_T B_T]``, ``A_f = [A_1; ...; A_T]``, exactly the branch ``LocalTrainer`` builds);
- a fold that ``train.fold`` merges into the weight (FLoRA's / FedEx-LoRA's dense ``dW``) must be the same for
  every client of a pack: it is merged once into the shared base weight (:meth:`LocalTrainer.restore_and_fold`);
- the classification head's Linear layers run per row slice with the client's own head tensors.

Each client keeps everything it has alone: its seeded batch order (``batch_indices`` from ``start.seed``), its
step count (a client with fewer steps drops out of the later steps), its stages (the adapters it trains per
stage), its optimizer (AdamW/SGD state), gradient clipping on its own gradient norm, HETLoRA's tail penalty,
FedProx's proximal term, its loss scaler (fp16). The objective of a step is ``sum_c objective_c``; client ``c``'s
parameters only act on rows ``c``, so the gradient of the sum with respect to them is the gradient of
``objective_c`` (the other terms contribute exact zeros) and each optimizer sees exactly its client's gradient.

Exactness (dropout off: the backbone's dropout and ``train.lora_dropout`` at 0). A packed client's update equals
its solo update up to float32 rounding, not bitwise: the packed batch is padded to the longest sequence of the
pack, so the frozen base runs matmuls of other shapes (more rows, longer sequences) whose kernels block and sum
in another order; the padded positions themselves add exact zeros (their attention weights are ``exp(-inf) = 0``
or underflow to 0, mean pooling and the token loss weigh them by 0). Those ulp-level differences (float32
``eps = 1.2e-7``) pass through a few optimizer steps; AdamW's ``m / sqrt(v)`` normalises a gradient entry, so a
relative change of the gradient of ``1e-6`` moves the step by about ``lr * 1e-6``. The tests
(``tests/test_packed_training.py``) check factors and heads to ``rtol = 1e-4, atol = 1e-5`` and the loss to
``rel = 1e-5`` after a few steps at ``lr = 1e-2`` (measured: at most ``3.6e-6`` apart over every method's pack);
a row that saw another client's adapter or head would be off by the size of that adapter's contribution (orders
of magnitude more). Under ``train.autocast`` the same holds at the autocast precision (bf16: ``eps = 7.8e-3``):
the base's low-precision matmuls on other shapes round differently, and AdamW's sign-like first steps can turn
that into differences up to ``lr`` on factor entries whose gradient is near zero; the update is another rounding
of the same computation, not the same numbers.

Dropout on. Randomness is drawn so that a result depends only on the pack, never on the worker count or the
order in which packs run. ``train.lora_dropout`` masks of client ``c`` come from a generator seeded by
``(start.seed, "lora-dropout", step, module, adapter)`` (recomputed identically by gradient checkpointing), drawn
for the client's own batch (its rows and its own padded length; ones over the pack's extra padding, which no real
position attends to): with the backbone's dropout at 0 a client's result depends on its own start and examples
only, not on its pack-mates (up to the float32 rounding above). These masks are not PEFT's (``LocalTrainer.train``
draws ``nn.Dropout`` masks from torch's global generator), so with dropout on a packed client's update is a
different sample than its solo update, not the same numbers. The backbone's own dropout (attention, hidden,
classifier dropout) draws from torch's global generator, seeded from the seeds of the pack's clients in order,
over the whole packed batch: with it on, a client's result also depends on its pack (the other clients' seeds,
batch sizes and sequence lengths). Packs are formed by the driver from the sorted client list, so a run is
reproducible for a given pack size.

When clients cannot share one pass, they run one after another with ``LocalTrainer.train`` (correct, not
packed): a client whose merged (dense) fold differs from every other client's of the pack (one base weight
cannot hold two folds), a head that is not made of Linear layers, or a tokenizer that pads on the left
(classification batches would then shift real tokens by the pack's padding). Clients with equal dense folds
form a packed group each. :func:`plan_pack` gives the decision (:class:`PackPlan`), and the last one is in
``trainer.last_pack``.

Per update, ``peak_memory_bytes`` is the peak of the packed pass the client was part of (CUDA; the memory its job
needed, shared with its pack-mates), and ``compute_seconds`` the pass's wall time split in proportion to the
examples each client processed (so the pack's clients sum to the pass). An out-of-memory error is the
:class:`workers.precision.GpuMemoryError` of ``LocalTrainer.train``, naming the pack's clients.

Afterwards the model is as ``LocalTrainer.train`` leaves it: eval mode, every parameter frozen, the PEFT layers'
own forward, no named adapters, the weights holding ``W0`` plus the shared merged fold; any later job or
evaluation prepares its own state.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.naming import pack_label
from core.rng import derive_seed
from core.wire import ClientStart, ClientUpdate, Delta, DenseDelta, LowRankDelta
from workers import precision
from workers.local_training import (
    IGNORE_INDEX,
    LocalTrainer,
    batch_indices,
    check_stage,
    cpu_copy,
    fold_branch_factors,
    proximal_term,
    split_steps,
    start_values,
    tail_penalty,
)

PACKED = "packed"
SOLO = "solo"


@dataclass(frozen=True)
class PackGroup:
    """Clients of a pack that train together (``path == "packed"``) or alone with ``LocalTrainer.train``."""

    indices: tuple[int, ...]  # positions in the pack's starts
    clients: tuple[int, ...]  # their client ids
    path: str  # "packed" or "solo"
    reason: str


@dataclass(frozen=True)
class PackPlan:
    """How :func:`train_pack` runs a pack: groups in order of their first client."""

    groups: tuple[PackGroup, ...]

    def path_of(self, client_id: int) -> str:
        """``"packed"`` or ``"solo"`` for a client of the pack."""
        return next(g.path for g in self.groups if client_id in g.clients)


@dataclass
class ClientLoRA:
    """One client's low-rank pieces per target module, as :func:`packed_lora_forward` applies them.

    ``adapters[name][module] = (A (r, k), B (d, r), scale)`` in the start's adapter order; ``branch[module] =
    (B_f, A_f)``, the frozen low-rank fold; ``dropout(x, name, module)`` the adapter's input dropout (``None``:
    identity).
    """

    adapters: dict[str, dict[str, tuple[Tensor, Tensor, float]]]
    branch: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    dropout: Callable[[Tensor, str, str], Tensor] | None = None


Segment = tuple[int, int, ClientLoRA]  # rows [lo, hi) of the batch and the client they belong to


def packed_lora_forward(layer: nn.Module, module: str, segments: Sequence[Segment], x: Tensor, *args: Any,
                        **kwargs: Any) -> Tensor:
    """A PEFT LoRA linear layer's forward with per-segment adapters: rows ``[lo, hi)`` see their client only.

    ``y = base(x)`` on the whole batch; then rows ``c`` get, in PEFT's order and with its casts (``x`` to the
    adapter's dtype, the result back to the base output's dtype), ``y_c + s B (A drop(x_c))`` for each of the
    client's adapters on ``module`` and ``+ B_f (A_f x_c)`` for its fold branch (scaling 1, no dropout): per
    row the operations of ``peft.tuners.lora.Linear.forward`` with that client's adapters active.
    """
    _check_rows(module, x, segments)
    result = layer.base_layer(x, *args, **kwargs)
    out_dtype = result.dtype
    parts = []
    for lo, hi, client in segments:
        out, xc = result[lo:hi], x[lo:hi]
        for name, per_module in client.adapters.items():
            found = per_module.get(module)
            if found is None:
                continue
            A, B, scale = found
            xc = xc if xc.dtype == A.dtype else xc.to(A.dtype)
            dropped = client.dropout(xc, name, module) if client.dropout is not None else xc
            out = out + F.linear(F.linear(dropped, A), B) * scale
        branch = client.branch.get(module)
        if branch is not None:
            B_f, A_f = branch
            xc = xc if xc.dtype == A_f.dtype else xc.to(A_f.dtype)
            out = out + F.linear(F.linear(xc, A_f), B_f)
        parts.append(out)
    return (torch.cat(parts) if len(parts) > 1 else parts[0]).to(out_dtype)


def packed_linear_forward(module: str, segments: Sequence[tuple[int, int, dict[str, Tensor]]], x: Tensor) -> Tensor:
    """A Linear head layer per segment: rows ``[lo, hi)`` through ``F.linear(x, weight, bias)`` of their client.

    ``segments``: ``(lo, hi, params)`` with the client's head tensors by parameter name (``{module}.weight``...).
    """
    _check_rows(module, x, segments)
    parts = []
    for lo, hi, params in segments:
        parts.append(F.linear(x[lo:hi], params[f"{module}.weight"], params.get(f"{module}.bias")))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _check_rows(module: str, x: Tensor, segments: Sequence[tuple[int, int, Any]]) -> None:
    rows = segments[-1][1] if segments else 0
    if x.shape[0] != rows:
        raise RuntimeError(f"packed training: module {module} got an input with {x.shape[0]} rows on dim 0 for a "
                           f"packed batch of {rows} examples (the batch must be dim 0)")


# ------------------------------------------------------------------------------------------------------ planning


def plan_pack(trainer: LocalTrainer, starts: Sequence[ClientStart], fold_keys: Sequence[str | None]) -> PackPlan:
    """Which clients of the pack train together (see the module docstring)."""
    ids = tuple(s.client_id for s in starts)
    if len(starts) == 1:
        return PackPlan((PackGroup((0,), ids, SOLO, "a single client: LocalTrainer.train"),))
    blocker = _unpackable(trainer)
    if blocker:
        return PackPlan(tuple(PackGroup((i,), (c,), SOLO, blocker) for i, c in enumerate(ids)))
    merged = [{m: parts[0] for m, parts in trainer.split_fold(s.fold).items() if parts[0]} for s in starts]
    groups: list[list[int]] = []
    for i in range(len(starts)):
        group = next((g for g in groups if _same_merged(merged[i], merged[g[0]], fold_keys[i], fold_keys[g[0]])),
                     None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    out = []
    for g in groups:
        if len(g) > 1:
            reason = "one shared dense fold merged once" if merged[g[0]] else "no dense fold"
            out.append(PackGroup(tuple(g), tuple(ids[i] for i in g), PACKED, reason))
        else:
            out.append(PackGroup(tuple(g), (ids[g[0]],), SOLO,
                                 "its dense fold differs from the other clients' (one base weight holds one fold)"))
    return PackPlan(tuple(out))


def _unpackable(trainer: LocalTrainer) -> str | None:
    """Why the model cannot run a packed batch (``None`` when it can)."""
    for name in trainer.loaded.head_names:
        owner, _, leaf = name.rpartition(".")
        module = trainer.model.get_submodule(owner) if owner else None
        if not isinstance(module, nn.Linear) or leaf not in ("weight", "bias"):
            return f"the head parameter {name} is not the weight or bias of a Linear layer"
    if trainer.task == "classification" and getattr(trainer.tokenizer, "padding_side", "right") != "right":
        return "the tokenizer pads on the left"
    return None


def _same_merged(a: dict[str, list[Delta]], b: dict[str, list[Delta]], key_a: str | None, key_b: str | None) -> bool:
    """Whether two clients' merged folds give the same weights (the same shared fold, or equal tensors)."""
    if key_a is not None and key_a == key_b:
        return True
    if a.keys() != b.keys():
        return False
    return all(len(a[m]) == len(b[m]) and all(_same_delta(x, y) for x, y in zip(a[m], b[m])) for m in a)


def _same_delta(x: Delta, y: Delta) -> bool:
    if x is y:
        return True
    if isinstance(x, DenseDelta) and isinstance(y, DenseDelta):
        return _same_tensor(x.W, y.W)
    if isinstance(x, LowRankDelta) and isinstance(y, LowRankDelta):
        return x.scale == y.scale and _same_tensor(x.B, y.B) and _same_tensor(x.A, y.A)
    return False


def _same_tensor(x: Tensor, y: Tensor) -> bool:
    return x is y or (x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y)))


# ------------------------------------------------------------------------------------------------------ training


def train_pack(trainer: LocalTrainer, starts: Sequence[ClientStart], examples: Sequence[Sequence[Any]],
               fold_keys: Sequence[str | None]) -> list[ClientUpdate]:
    """Train the client jobs ``starts`` (with their local ``examples``) on ``trainer``'s model; updates in order.

    One client: exactly ``[trainer.train(starts[0], examples[0], fold_keys[0])]``. More: packed groups and solo
    clients as :func:`plan_pack` decides (recorded in ``trainer.last_pack``); see the module docstring.
    ``fold_keys[i]``: the key of ``starts[i].fold`` (:meth:`workers.shared_args.SharedArgs.fold_key`).
    """
    if not starts or not len(starts) == len(examples) == len(fold_keys):
        raise ValueError(f"train_pack needs one examples list and one fold key per start; got {len(starts)} "
                         f"starts, {len(examples)} example lists and {len(fold_keys)} fold keys")
    ids = [s.client_id for s in starts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a pack holds each client once; got client ids {ids}")
    plan = plan_pack(trainer, starts, fold_keys)
    trainer.last_pack = plan
    if len(starts) == 1:
        return [trainer.train(starts[0], examples[0], fold_keys[0])]
    updates: list[ClientUpdate | None] = [None] * len(starts)
    for group in plan.groups:
        idx = list(group.indices)
        if group.path == SOLO:
            updates[idx[0]] = trainer.train(starts[idx[0]], examples[idx[0]], fold_keys[idx[0]])
            continue
        job = _PackedJob(trainer, [starts[i] for i in idx], [examples[i] for i in idx], [fold_keys[i] for i in idx])
        for i, update in zip(idx, job.run()):
            updates[i] = update
    return updates  # type: ignore[return-value]


class _Client:
    """One client's state in a packed job: its data stream, pieces, trainable tensors, optimizer and losses."""

    def __init__(self, trainer: LocalTrainer, start: ClientStart, examples: Sequence[Any], branch: list[Any]):
        cfg, device = trainer.cfg, trainer.device
        trainer.check_adapters(start)
        for stage in start.stages:
            check_stage(start, stage.train)
        self.start, self.examples, self.n = start, examples, len(examples)
        self.total = cfg.total_steps(self.n)
        stage_steps = split_steps(self.total, [s.fraction for s in start.stages])
        self.stage_of = [i for i, steps in enumerate(stage_steps) for _ in range(steps)]
        self.batches: Iterator[list[int]] = batch_indices(self.n, cfg.batch_size,
                                                          torch.Generator(device="cpu").manual_seed(int(start.seed)))
        self.factors: dict[str, dict[str, tuple[nn.Parameter, nn.Parameter]]] = {}  # name -> module -> (A, B)
        for name, per_module in start.adapters.items():
            self.factors[name] = {m: (nn.Parameter(init.A.detach().to(device, torch.float32, copy=True)),
                                      nn.Parameter(init.B.detach().to(device, torch.float32, copy=True)))
                                  for m, init in per_module.items()}
        self.head = {name: nn.Parameter(value.detach().to(device, trainer.model.get_parameter(name).dtype, copy=True))
                     for name, value in trainer.head_values(start.head).items()}
        self.trains_head = start.train_head and trainer.task == "classification"
        self.p = float(cfg.lora_dropout)
        self.lora = ClientLoRA(
            {name: {m: (A, B, float(start.adapters[name][m].scale)) for m, (A, B) in per.items()}
             for name, per in self.factors.items()},
            {m: fold_branch_factors(deltas, device) for m, deltas in branch if deltas},
            self._dropout if cfg.lora_dropout > 0 else None)
        self.step = 0
        self.width = 0  # the padded length of the client's own batch this step
        self.stage: int | None = None
        self.params: list[nn.Parameter] = []
        all_params: dict[int, nn.Parameter] = {}
        for stage in start.stages:
            all_params.update({id(p): p for p in self.stage_params(stage.train)})
        self.optimizer = trainer.new_optimizer(list(all_params.values()))
        self.scaler = precision.grad_scaler(cfg.autocast, device)
        self.anchors = start_values(all_params.values()) if cfg.prox_mu > 0 else None
        self.losses: list[float] = []
        self.rows = 0

    def stage_params(self, train: Sequence[str]) -> list[nn.Parameter]:
        """The tensors a stage trains, in ``LocalTrainer.set_trainable``'s order (factors by module, then head)."""
        out: list[nn.Parameter] = []
        for name in train:
            for m, init in self.start.adapters[name].items():
                A, B = self.factors[name][m]
                out += [p for p, flag in ((A, init.train_A), (B, init.train_B)) if flag]
        if self.trains_head:
            out += list(self.head.values())
        return out

    def enter_step(self) -> list[int]:
        """Switch to the stage of this step (trainable flags as ``set_trainable``) and draw the step's batch."""
        stage = self.stage_of[self.step]
        if stage != self.stage:
            for per in self.factors.values():
                for A, B in per.values():
                    A.requires_grad_(False)
                    B.requires_grad_(False)
            for p in self.head.values():
                p.requires_grad_(False)
            self.params = self.stage_params(self.start.stages[stage].train)
            for p in self.params:
                p.requires_grad_(True)
            self.stage = stage
        ids = next(self.batches)
        self.rows += len(ids)
        return ids

    def _dropout(self, x: Tensor, name: str, module: str) -> Tensor:
        """Inverted dropout of rate ``train.lora_dropout`` with a mask keyed by (seed, step, module, adapter).

        On a ``(rows, length, ...)`` input the mask is drawn for the client's own batch width (``self.width``) and
        padded with ones over the pack's extra padding, so the mask of every real position depends on the client
        alone; other inputs get a mask of their own shape.
        """
        gen = torch.Generator(device=x.device)
        gen.manual_seed(derive_seed(self.start.seed, "lora-dropout", self.step, module, name))
        own = x.dim() >= 3 and x.shape[1] >= self.width
        shape = (x.shape[0], self.width, *x.shape[2:]) if own else tuple(x.shape)
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p, generator=gen)
        if own and self.width < x.shape[1]:
            keep = torch.cat([keep, keep.new_ones((x.shape[0], x.shape[1] - self.width, *x.shape[2:]))], 1)
        return x * keep / (1.0 - self.p)

    def penalty(self, device: torch.device) -> Tensor:
        """HETLoRA's tail penalty on this client's adapter (:func:`workers.local_training.tail_penalty`)."""
        penalty = self.start.penalty
        per = self.factors.get(penalty.adapter, {})  # type: ignore[union-attr]

        def factors(m: str) -> tuple[Tensor, Tensor] | None:
            return (per[m][1], per[m][0]) if m in per else None

        return tail_penalty(penalty, factors, device)  # type: ignore[arg-type]

    def update(self, compute_seconds: float, peak: int | None) -> ClientUpdate:
        start = self.start
        adapters = {name: {m: (cpu_copy(B), cpu_copy(A)) for m, (A, B) in per.items()}
                    for name, per in self.factors.items()}
        head = {n: cpu_copy(p) for n, p in self.head.items()} if start.train_head and self.head else None
        return ClientUpdate(
            client_id=start.client_id, round=start.round, adapters=adapters, n_examples=self.n,
            train_loss=float(sum(self.losses) / len(self.losses)) if self.losses else 0.0, head=head,
            compute_seconds=compute_seconds, steps=len(self.losses), upload=tuple(start.upload),
            peak_memory_bytes=peak)


class _PackedJob:
    """A group of clients with one shared merged fold, trained in one pass per step (module docstring)."""

    def __init__(self, trainer: LocalTrainer, starts: list[ClientStart], examples: list[Sequence[Any]],
                 fold_keys: list[str | None]):
        self.trainer, self.starts, self.examples, self.fold_keys = trainer, starts, examples, fold_keys
        self.segments: list[Segment] = []
        self.heads: list[tuple[int, int, dict[str, Tensor]]] = []

    def run(self) -> list[ClientUpdate]:
        t0 = time.perf_counter()
        try:
            return self._run(t0)
        except precision.oom_types() as err:
            label = pack_label([s.client_id for s in self.starts], self.starts[0].round)
            raise precision.out_of_memory(f"the pack of {label}", self.trainer.device) from err

    def _run(self, t0: float) -> list[ClientUpdate]:
        trainer = self.trainer
        precision.reset_peak(trainer.device)
        splits = [trainer.split_fold(s.fold) for s in self.starts]
        merged = {m: parts[0] for m, parts in splits[0].items() if parts[0]}
        branched = any(parts[1] for split in splits for parts in split.values())
        keys = set(self.fold_keys)
        # the key names the whole fold: valid for the weights only when all of it is the shared merged part
        key = self.fold_keys[0] if len(keys) == 1 and not branched else None
        trainer.restore_and_fold(merged, key)
        trainer.clear_adapters()
        clients = [_Client(trainer, s, ex, [(m, parts[1]) for m, parts in split.items()])
                   for s, ex, split in zip(self.starts, self.examples, splits)]
        torch.manual_seed(derive_seed(0, "packed-dropout", *(s.seed for s in self.starts)))  # backbone dropout
        patched = self._patch()
        trainer.model.train()
        try:
            for step in range(max(c.total for c in clients)):
                self._step([c for c in clients if step < c.total])
        finally:
            for module in patched:
                del module.forward
            self.segments, self.heads = [], []
            trainer.model.eval()
            trainer.model.requires_grad_(False)
        wall = time.perf_counter() - t0
        rows = sum(c.rows for c in clients)
        peak = precision.peak_bytes(trainer.device)
        return [c.update(wall * c.rows / rows if rows else wall / len(clients), peak) for c in clients]

    def _patch(self) -> list[nn.Module]:
        """Per-segment forwards on every target layer and every Linear layer of the head."""
        trainer, patched = self.trainer, []
        for m, layer in trainer.layers.items():
            layer.forward = functools.partial(self._lora_forward, layer, m)
            patched.append(layer)
        for owner in dict.fromkeys(n.rpartition(".")[0] for n in trainer.loaded.head_names):
            module = trainer.model.get_submodule(owner)
            module.forward = functools.partial(self._head_forward, owner)
            patched.append(module)
        return patched

    def _lora_forward(self, layer: nn.Module, module: str, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return packed_lora_forward(layer, module, self.segments, x, *args, **kwargs)

    def _head_forward(self, module: str, x: Tensor) -> Tensor:
        return packed_linear_forward(module, self.heads, x)

    def _step(self, active: list[_Client]) -> None:
        trainer, cfg = self.trainer, self.trainer.cfg
        parts = [trainer.collate([c.examples[i] for i in c.enter_step()]) for c in active]
        for c, part in zip(active, parts):
            c.width = part["input_ids"].shape[1]
        batch = pack_batches(parts, trainer.tokenizer)
        labels = batch.pop("labels")
        bounds, lo = [], 0
        for part in parts:
            bounds.append((lo, lo + part["labels"].shape[0]))
            lo = bounds[-1][1]
        self.segments = [(a, b, c.lora) for (a, b), c in zip(bounds, active)]
        self.heads = [(a, b, c.head) for (a, b), c in zip(bounds, active)]
        with trainer.autocast():
            logits = trainer.model(**batch).logits
            losses = [trainer.task_loss(logits[a:b], labels[a:b]) for a, b in bounds]
        objective: Tensor | None = None
        for c, loss in zip(active, losses):
            term = (loss + c.penalty(trainer.device)) if c.start.penalty else loss
            if c.anchors is not None:
                term = term + proximal_term(c.params, c.anchors, cfg.prox_mu)
            term = c.scaler.scale(term) if c.scaler else term
            objective = term if objective is None else objective + term
        for c in active:
            c.optimizer.zero_grad(set_to_none=True)
        if objective is not None and objective.requires_grad:
            objective.backward()
        for c, loss in zip(active, losses):
            if cfg.grad_clip is not None:
                if c.scaler:
                    c.scaler.unscale_(c.optimizer)
                torch.nn.utils.clip_grad_norm_(c.params, cfg.grad_clip)
            if c.scaler:
                c.scaler.step(c.optimizer)
                c.scaler.update()
            else:
                c.optimizer.step()
            c.losses.append(float(loss.detach()))
            c.step += 1
            if c.step == c.total:
                c.optimizer.zero_grad(set_to_none=True)  # a finished client frees its gradients


def pack_batches(parts: Sequence[dict[str, Tensor]], tokenizer: Any) -> dict[str, Tensor]:
    """Concatenate collated batches along dim 0, right-padding each to the longest sequence of the pack.

    Padding values: ``input_ids`` the tokenizer's pad id, ``attention_mask`` 0, ``token_type_ids`` the
    tokenizer's pad type id, ``labels`` (causal LM) ``IGNORE_INDEX``; 1-D tensors (class labels) are concatenated.
    """
    pad = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0,
           "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0), "labels": IGNORE_INDEX}
    width = max(p["input_ids"].shape[1] for p in parts)
    out: dict[str, Tensor] = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if tensors[0].dim() == 1:
            out[key] = torch.cat(tensors)
            continue
        if key not in pad:
            raise ValueError(f"packed training does not know how to pad the model input {key!r} (it pads "
                             f"{sorted(pad)}); train these clients one at a time")
        out[key] = torch.cat([F.pad(t, (0, width - t.shape[1]), value=pad[key]) for t in tensors])
    return out
