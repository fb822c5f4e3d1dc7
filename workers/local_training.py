"""Local LoRA training of one client job: restore W0, fold, set the adapters, train, ship factors back.

One :class:`LocalTrainer` holds one base model, wrapped once with PEFT LoRA layers on the target modules,
and a pristine CPU copy of the original target weights ``W0: (d, k)``. Every job starts from scratch:

1. the fold: ``W <- W0 + sum(fold)`` on every target module (copied from the pristine copy, never subtracted,
   so rounding cannot accumulate over rounds), or, for a low-rank fold (``train.fold``: ``auto`` / ``branch``),
   ``W = W0`` untouched and the fold run as a frozen LoRA branch ``x -> (sum_t s_t B_t A_t) x`` active next
   to the trainable adapters: the same function with no ``d x k`` work per job (a weight is copied back from
   ``W0`` only when an earlier dense merge changed it). The branch's output equals the merged layer's up to
   float32 rounding of the two summation orders (``(W0 + F) x`` vs ``W0 x + F x``);
2. the head is loaded (the start's, else the model's initial seeded head);
3. the start's named adapters are (re)created with their per-module ranks, ``lora_alpha = scale * r``
   (PEFT's scaling is set to ``AdapterInit.scale`` exactly), and their values copied in;
4. the local stages run: each trains the adapters it names (every adapter of the start stays active in
   the forward: pFedLoRA's private and shared adapters are summed), for its share of the steps; with
   ``train.prox_mu > 0`` the loss adds FedProx's proximal term towards the start-of-job values.

Every random stream (batch order, dropout) comes from ``start.seed``, so a job's result does not depend
on which worker ran it or what it ran before. Several jobs of a round trained in one pass on this model:
:mod:`workers.packed_training`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import Tensor, nn

from core.wire import ClientStart, ClientUpdate, Delta, LowRankDelta, TailPenalty
from workers import precision
from workers.models import LoadedModel, head_state, reseed
from workers.train_config import TrainConfig

IGNORE_INDEX = -100
_PLACEHOLDER = "_hetfedlora_placeholder"
FOLD_ADAPTER = "_hetfedlora_fold"  # the frozen low-rank fold branch (never trained, never shipped)


class LocalTrainer:
    """A base model with LoRA layers on its target modules, reused for every client job of a worker."""

    def __init__(self, loaded: LoadedModel, cfg: TrainConfig, max_length: int = 64,
                 device: str | torch.device = "cpu"):
        self.loaded = loaded
        self.cfg = cfg
        self.max_length = int(max_length)
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device)
        self.tokenizer = loaded.tokenizer
        self.task = loaded.task
        modules = dict(self.model.named_modules())
        # Pristine copy of the target weights, kept on the CPU: W0 (d, k) per module.
        self.w0 = {m: modules[m].weight.detach().to("cpu", copy=True) for m in loaded.targets}
        self.head0 = head_state(loaded)
        inject_adapter_in_model(LoraConfig(r=1, lora_alpha=1, target_modules=list(loaded.targets),
                                           init_lora_weights=False), self.model, adapter_name=_PLACEHOLDER)
        modules = dict(self.model.named_modules())
        self.layers = {m: modules[m] for m in loaded.targets}  # PEFT LoRA layers, same names as before
        for layer in self.layers.values():
            layer.delete_adapter(_PLACEHOLDER)
        self.model.requires_grad_(False)
        precision.check_autocast(cfg.autocast, self.device)
        if cfg.gradient_checkpointing:
            precision.enable_gradient_checkpointing(self.model)
        self._params = dict(self.model.named_parameters())
        self.adapter_names: tuple[str, ...] = ()
        self._fold_key: str | None = None  # key of the shared fold the base weights hold (restore_and_fold)
        self.merged: set[str] = set()  # modules whose weight holds a dense fold (W != W0)
        self.fold_modes: dict[str, str] = {}  # the last fold's choice per module: "none", "dense" or "branch"
        self.last_pack: Any = None  # the PackPlan of the last workers.packed_training.train_pack call

    def reset(self, cfg: TrainConfig, seed: int) -> None:
        """Serve another run on the same loaded model: its train options and the parameters drawn from ``seed``.

        Afterwards the trainer is in the state a fresh ``LocalTrainer(load_model(..., seed), cfg)`` starts in:
        pristine weights, no adapters, the seed's initial head. Options that change the model itself
        (``autocast``, ``gradient_checkpointing``) must equal the current ones (:meth:`can_reset`).
        """
        if not self.can_reset(cfg):
            raise ValueError("train.autocast / train.gradient_checkpointing differ: load the model again")
        self.cfg = cfg
        self.restore_and_fold({})
        self.clear_adapters()
        reseed(self.loaded, seed)
        self.head0 = head_state(self.loaded)
        self.model.eval()
        self.model.requires_grad_(False)

    def can_reset(self, cfg: TrainConfig) -> bool:
        """Whether :meth:`reset` can switch to ``cfg``.

        It needs the same model-shaping options, and no target weight drawn from the seed (``W0`` would change).
        """
        seeded_target = any(f"{m}.weight" in self.loaded.seeded for m in self.w0)
        same = (cfg.autocast, cfg.gradient_checkpointing) == (self.cfg.autocast, self.cfg.gradient_checkpointing)
        return same and not seeded_target

    # ---------------------------------------------------------------------------------------- model state

    def shapes(self) -> dict[str, tuple[int, int]]:
        """``(d_out, k_in)`` of every target module."""
        return {m: tuple(w.shape) for m, w in self.w0.items()}  # type: ignore[misc]

    @torch.no_grad()
    def restore_and_fold(self, fold: dict[str, Delta | Sequence[Delta]], key: str | None = None) -> None:
        """``W0 + sum(fold[m])`` on every target module: merged into the weight or as a frozen branch.

        Per module (``train.fold``): ``dense`` merges every delta; ``branch`` runs the low-rank deltas as the
        frozen adapter :data:`FOLD_ADAPTER` (``B = [s_1 B_1 ... s_T B_T]``, ``A = [A_1; ...; A_T]``, scaling 1)
        and merges the dense ones; ``auto`` branches when every delta is low-rank and the summed rank ``r_f``
        has ``r_f (d + k) < d k``, else merges. ``W <- W0`` bitwise where nothing is merged. The choice of
        the last call is in :attr:`fold_modes`.

        ``key`` names a fold made of shared objects (:meth:`workers.shared_args.SharedArgs.fold_key`): when
        it equals the key of the previous call the model already holds ``W0 + fold`` (only this method writes
        the base weights and the fold branch), so nothing is redone: one merge per worker per round for a
        fold every client shares (FLoRA's ``dW``).
        """
        if key is not None and key == self._fold_key:
            return
        self._fold_key = None
        parts = self.split_fold(fold)
        for m, w0 in self.w0.items():
            layer = self.layers[m]
            if FOLD_ADAPTER in layer.lora_A:
                layer.delete_adapter(FOLD_ADAPTER)
            merge, branch = parts[m]
            weight = layer.get_base_layer().weight
            if merge:
                total = w0.to(self.device, torch.float32, copy=True)  # copy: never touch the pristine W0
                for delta in merge:
                    total.add_(_dense_on(delta, self.device))
                weight.copy_(total)
                self.merged.add(m)
            elif m in self.merged:
                weight.copy_(w0)
                self.merged.discard(m)
            if branch:
                self._add_fold_branch(layer, branch)
            self.fold_modes[m] = "branch" if branch else "dense" if merge else "none"
        self._fold_key = key
        self._activate()

    def split_fold(self, fold: dict[str, Delta | Sequence[Delta]]) -> dict[str, tuple[list[Delta], list[LowRankDelta]]]:
        """Per target module ``(merged, branch)``: the deltas merged into the weight and those run as the branch.

        The choice of :meth:`restore_and_fold` (``train.fold``); modules without a delta get ``([], [])``.
        """
        unknown = sorted(set(fold) - set(self.w0))
        if unknown:
            raise ValueError(f"fold names modules {unknown} that are not target modules of the model "
                             f"(targets: {sorted(self.w0)[:4]}...)")
        parts: dict[str, tuple[list[Delta], list[LowRankDelta]]] = {}
        for m, w0 in self.w0.items():
            deltas = fold.get(m, ())
            deltas = [deltas] if not isinstance(deltas, list | tuple) else list(deltas)
            for delta in deltas:
                if tuple(delta.shape) != tuple(w0.shape):
                    raise ValueError(f"fold delta for {m} has shape {tuple(delta.shape)}, the module's "
                                     f"weight is {tuple(w0.shape)}")
            branch = [d for d in deltas if isinstance(d, LowRankDelta)] if self._branches(deltas, w0) else []
            parts[m] = ([d for d in deltas if not any(d is b for b in branch)], branch)
        return parts

    def _branches(self, deltas: list[Delta], w0: Tensor) -> bool:
        """Whether ``train.fold`` runs this module's low-rank deltas as a branch (see :meth:`restore_and_fold`)."""
        mode = self.cfg.fold
        if mode == "dense" or not deltas:
            return False
        if mode == "branch":
            return True
        if not all(isinstance(d, LowRankDelta) for d in deltas):
            return False
        d, k = w0.shape
        return sum(delta.rank for delta in deltas) * (d + k) < d * k  # type: ignore[union-attr]

    def _add_fold_branch(self, layer: nn.Module, deltas: list[LowRankDelta]) -> None:
        """The frozen adapter ``x -> B (A x)`` with ``B A = sum_t s_t B_t A_t``, in float32, no dropout."""
        B, A = fold_branch_factors(deltas, self.device)
        r = A.shape[0]
        layer.update_layer(FOLD_ADAPTER, r, lora_alpha=r, config=LoraConfig(
            r=1, lora_alpha=1, lora_dropout=0.0, init_lora_weights=False, use_rslora=False))
        layer.scaling[FOLD_ADAPTER] = 1.0
        layer.lora_A[FOLD_ADAPTER].to(torch.float32)
        layer.lora_B[FOLD_ADAPTER].to(torch.float32)
        layer.lora_A[FOLD_ADAPTER].weight.copy_(A)
        layer.lora_B[FOLD_ADAPTER].weight.copy_(B)

    def _activate(self) -> None:
        """Every layer runs the current named adapters plus its fold branch (if any); nothing requires grad."""
        for layer in self.layers.values():
            fold = [FOLD_ADAPTER] if FOLD_ADAPTER in layer.lora_A else []
            layer.set_adapter([*self.adapter_names, *fold])
        self.model.requires_grad_(False)

    @torch.no_grad()
    def load_head(self, head: dict[str, Tensor] | None) -> None:
        """Copy ``head`` (else the model's initial seeded head) into the classification head."""
        for name, value in self.head_values(head).items():
            self._params[name].copy_(value)

    def head_values(self, head: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """The head a job starts from: ``head`` over the model's initial head, checked against the head's shapes."""
        values = dict(self.head0)
        if head:
            unknown = sorted(set(head) - set(values))
            if unknown:
                raise ValueError(f"head has tensors {unknown}; the model's head is {sorted(values)}")
            values.update(head)
        for name, value in values.items():
            param = self._params[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"head.{name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}")
        return values

    def clear_adapters(self) -> None:
        """Remove every named adapter: the model computes ``W0 + fold`` only (merged weights, fold branch)."""
        for layer in self.layers.values():
            for name in [n for n in layer.lora_A.keys() if n != FOLD_ADAPTER]:
                layer.delete_adapter(name)
        self.adapter_names = ()
        self._activate()

    @torch.no_grad()
    def set_adapters(self, start: ClientStart) -> None:
        """(Re)create the start's named adapters with their per-module ranks and initial values."""
        self.clear_adapters()
        config = LoraConfig(r=1, lora_alpha=1, lora_dropout=self.cfg.lora_dropout, init_lora_weights=False,
                            use_rslora=False)
        self.check_adapters(start)
        for name, per_module in start.adapters.items():
            for m, init in per_module.items():
                layer = self.layers[m]
                r = init.rank
                layer.update_layer(name, r, lora_alpha=init.scale * r, config=config)
                layer.scaling[name] = float(init.scale)  # exactly the start's scale, whatever alpha/r rounds to
                layer.lora_A[name].to(torch.float32)
                layer.lora_B[name].to(torch.float32)
                layer.lora_A[name].weight.copy_(init.A)
                layer.lora_B[name].weight.copy_(init.B)
        self.adapter_names = tuple(start.adapters)
        self._activate()

    def check_adapters(self, start: ClientStart) -> None:
        """Every adapter of ``start`` sits on target modules with factors that fit the module's weight."""
        for name, per_module in start.adapters.items():
            unknown = sorted(set(per_module) - set(self.w0))
            if unknown:
                raise ValueError(f"client {start.client_id}: adapter {name!r} names modules {unknown} that "
                                 f"are not target modules of the model")
            for m, init in per_module.items():
                d, k = self.w0[m].shape
                if init.B.shape[0] != d or init.A.shape[1] != k:
                    raise ValueError(f"client {start.client_id}: adapter {name!r} on {m}: B {tuple(init.B.shape)}"
                                     f" / A {tuple(init.A.shape)} do not fit the weight ({d}, {k})")

    def prepare(self, start: ClientStart, fold_key: str | None = None) -> None:
        """Put the model in the start-of-round state of ``start`` (no training, everything frozen)."""
        self.restore_and_fold(start.fold, fold_key)
        self.load_head(start.head)
        self.set_adapters(start)

    def set_trainable(self, start: ClientStart, train: Sequence[str]) -> list[nn.Parameter]:
        """Make the factors of the adapters in ``train`` (per train_A/train_B) and the head trainable."""
        check_stage(start, train)
        self.model.requires_grad_(False)
        params: list[nn.Parameter] = []
        for name in train:
            for m, init in start.adapters[name].items():
                layer = self.layers[m]
                for factor, flag in ((layer.lora_A[name].weight, init.train_A),
                                     (layer.lora_B[name].weight, init.train_B)):
                    factor.requires_grad_(flag)
                    if flag:
                        params.append(factor)
        if start.train_head and self.task == "classification":
            for name in self.loaded.head_names:
                self._params[name].requires_grad_(True)
                params.append(self._params[name])
        return params

    def adapter_factors(self, start: ClientStart) -> dict[str, dict[str, tuple[Tensor, Tensor]]]:
        """``{adapter: {module: (B, A)}}`` as detached contiguous CPU float32 clones."""
        out: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
        for name, per_module in start.adapters.items():
            out[name] = {m: (cpu_copy(self.layers[m].lora_B[name].weight), cpu_copy(self.layers[m].lora_A[name].weight))
                         for m in per_module}
        return out

    # -------------------------------------------------------------------------------------------- training

    def train(self, start: ClientStart, examples: Sequence[Any], fold_key: str | None = None) -> ClientUpdate:
        """Run one client job: prepare the start-of-round model, train the stages, return the update.

        ``fold_key``: see :meth:`restore_and_fold`.
        ``train_loss`` is the mean task loss over the steps (without the tail penalty); 0.0 with no steps.
        The model trains in ``train()`` mode (the backbone's own dropout is on, seeded like the rest).
        """
        t0 = time.perf_counter()
        try:
            return self._train(start, examples, fold_key, t0)
        except precision.oom_types() as err:
            raise precision.out_of_memory(f"client {start.client_id} in round {start.round + 1}", self.device) from err

    def _train(self, start: ClientStart, examples: Sequence[Any], fold_key: str | None, t0: float) -> ClientUpdate:
        precision.reset_peak(self.device)
        self.prepare(start, fold_key)
        n = len(examples)
        total = self.cfg.total_steps(n)
        stage_steps = split_steps(total, [s.fraction for s in start.stages])
        order = torch.Generator(device="cpu").manual_seed(int(start.seed))
        torch.manual_seed(int(start.seed))  # dropout (CPU and CUDA)
        all_params: dict[int, nn.Parameter] = {}
        for stage in start.stages:
            all_params.update({id(p): p for p in self.set_trainable(start, stage.train)})
        optimizer = self.new_optimizer(list(all_params.values()))
        scaler = precision.grad_scaler(self.cfg.autocast, self.device)
        anchors = start_values(all_params.values()) if self.cfg.prox_mu > 0 else None
        batches = batch_indices(n, self.cfg.batch_size, order)
        losses: list[float] = []
        self.model.train()
        try:
            for stage, steps in zip(start.stages, stage_steps):
                params = self.set_trainable(start, stage.train)
                for _ in range(steps):
                    batch = self.collate([examples[i] for i in next(batches)])
                    with self.autocast():
                        loss = self.loss(batch)
                    objective = (loss + self.penalty(start.penalty)) if start.penalty else loss
                    if anchors is not None:
                        objective = objective + proximal_term(params, anchors, self.cfg.prox_mu)
                    optimizer.zero_grad(set_to_none=True)
                    (scaler.scale(objective) if scaler else objective).backward()
                    if self.cfg.grad_clip is not None:
                        if scaler:
                            scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    losses.append(float(loss.detach()))
        finally:
            self.model.eval()
            self.model.requires_grad_(False)
        head = head_state(self.loaded) if start.train_head and self.loaded.head_names else None
        return ClientUpdate(
            client_id=start.client_id, round=start.round, adapters=self.adapter_factors(start),
            n_examples=n, train_loss=float(sum(losses) / len(losses)) if losses else 0.0, head=head,
            compute_seconds=time.perf_counter() - t0, steps=len(losses), upload=tuple(start.upload),
            peak_memory_bytes=precision.peak_bytes(self.device))

    def autocast(self):
        """The forward-pass precision context of ``train.autocast`` (:mod:`workers.precision`)."""
        return precision.autocast(self.cfg.autocast, self.device)

    def new_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh ``train.optimizer`` (AdamW or SGD with the train options) over ``params``."""
        if not params:
            params = [nn.Parameter(torch.zeros(1))]  # nothing trainable: a no-op optimizer keeps the loop simple
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                                   weight_decay=self.cfg.weight_decay)
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def penalty(self, penalty: TailPenalty) -> Tensor:
        """HETLoRA's tail penalty (:func:`tail_penalty`) on the model's adapter ``penalty.adapter``."""
        def factors(m: str) -> tuple[Tensor, Tensor] | None:
            layer = self.layers[m]
            if penalty.adapter not in layer.lora_A:
                return None
            return layer.lora_B[penalty.adapter].weight, layer.lora_A[penalty.adapter].weight

        return tail_penalty(penalty, factors, self.device)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy of the head (classification) or of the target tokens (causal LM)."""
        labels = batch.pop("labels")
        return self.task_loss(self.model(**batch).logits, labels)

    def task_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """:meth:`loss` of given logits: the batch's mean over its examples (classification) or target tokens."""
        if self.task == "classification":
            return F.cross_entropy(logits.float(), labels)
        # next-token loss: position t predicts token t + 1; prompt and padding are IGNORE_INDEX
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX)

    # -------------------------------------------------------------------------------------------- batching

    def collate(self, examples: Sequence[Any]) -> dict[str, Tensor]:
        """Tokenise a batch on the model's device: classification or prompt + target (causal LM)."""
        if self.task == "classification":
            batch = classification_batch(self.tokenizer, examples, self.max_length)
        else:
            batch = causal_batch(self.tokenizer, examples, self.max_length)
        return {k: v.to(self.device) for k, v in batch.items()}


def classification_batch(tokenizer: Any, examples: Sequence[Any], max_length: int) -> dict[str, Tensor]:
    """Padded token ids of ``text`` (and ``text_pair`` when the examples have one) and integer labels."""
    texts = [ex.text for ex in examples]
    pairs = [getattr(ex, "text_pair", None) for ex in examples]
    pairs_arg = [p or "" for p in pairs] if any(p is not None for p in pairs) else None
    enc = tokenizer(texts, pairs_arg, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    names = getattr(tokenizer, "model_input_names", None) or ("input_ids", "attention_mask")
    batch = {k: v for k, v in enc.items() if k in names}
    batch["labels"] = torch.tensor([int(ex.label) for ex in examples], dtype=torch.long)
    return batch


def prompt_of(example: Any) -> str:
    """The causal-LM prompt of an example: ``text``, plus ``text_pair`` on a new line when present."""
    pair = getattr(example, "text_pair", None)
    return example.text if not pair else f"{example.text}\n{pair}"


def causal_batch(tokenizer: Any, examples: Sequence[Any], max_length: int) -> dict[str, Tensor]:
    """Right-padded ``prompt + target + eos``; labels are the token ids on the target, -100 elsewhere.

    Sequences longer than ``max_length`` keep the start of the target (at most ``max_length - 1`` tokens)
    and the end of the prompt.
    """
    rows: list[tuple[list[int], list[int]]] = []
    for ex in examples:
        prompt = tokenizer(prompt_of(ex))["input_ids"]
        target = tokenizer(str(ex.target), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        target = target[: max_length - 1]
        prompt = prompt[-(max_length - len(target)):] if prompt else prompt
        rows.append((prompt, target))
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt, target) in enumerate(rows):
        seq = prompt + target
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(prompt): len(seq)] = torch.tensor(target)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_lengths(tokenizer: Any, examples: Sequence[Any], task: str) -> list[int]:
    """Each example's length in tokens before ``max_length`` truncation, as the batches above build it.

    Classification: ``text`` (+ ``text_pair``) with the special tokens; causal LM: prompt + target + eos.
    """
    if not examples:
        return []
    if task == "classification":
        texts = [ex.text for ex in examples]
        pairs = [getattr(ex, "text_pair", None) for ex in examples]
        pairs_arg = [p or "" for p in pairs] if any(p is not None for p in pairs) else None
        return [len(ids) for ids in tokenizer(texts, pairs_arg, verbose=False)["input_ids"]]
    prompts = tokenizer([prompt_of(ex) for ex in examples], verbose=False)["input_ids"]
    targets = tokenizer([str(ex.target) for ex in examples], add_special_tokens=False, verbose=False)["input_ids"]
    return [len(p) + len(t) + 1 for p, t in zip(prompts, targets)]


def check_stage(start: ClientStart, train: Sequence[str]) -> None:
    """A local stage trains adapters the start defines."""
    unknown = sorted(set(train) - set(start.adapters))
    if unknown:
        raise ValueError(f"client {start.client_id}: a local stage trains adapters {unknown} that the "
                         f"start does not define ({sorted(start.adapters)})")


def tail_penalty(penalty: TailPenalty, factors: Callable[[str], tuple[Tensor, Tensor] | None],
                 device: torch.device) -> Tensor:
    """HETLoRA's ``lam * sum_m ||B_m[:, s_m:]||_F * ||A_m[s_m:, :]||_F``; ``factors(m)`` gives ``(B, A)`` or None.

    Cho et al., HetLoRA (EMNLP 2024), sec. 3: ``s_m = penalty.start[m]``; a module whose tail is empty adds 0.
    """
    total = torch.zeros((), device=device)
    for m, s in penalty.start.items():
        found = factors(m)
        if found is None:
            raise ValueError(f"TailPenalty names adapter {penalty.adapter!r}, absent on module {m}")
        B, A = found  # (d, r), (r, k)
        if s < A.shape[0]:
            total = total + torch.linalg.norm(B[:, s:]) * torch.linalg.norm(A[s:, :])
    return penalty.lam * total


def batch_indices(n: int, batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of example indices: successive seeded permutations, the last batch of each may be short."""
    while n > 0:
        perm = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, batch_size):
            yield perm[i: i + batch_size]


def split_steps(total: int, fractions: Sequence[float]) -> list[int]:
    """Steps per stage: ``round(cumulative fraction * total)`` differences (no step lost to rounding)."""
    if any(not (f >= 0 and math.isfinite(f)) for f in fractions):
        raise ValueError(f"LocalStage fractions {list(fractions)} must be finite and >= 0")
    bounds, acc = [0], 0.0
    for f in fractions:
        acc += f
        bounds.append(int(round(acc * total)))
    return [b - a for a, b in zip(bounds, bounds[1:])]


def start_values(params: Iterable[nn.Parameter]) -> dict[int, Tensor]:
    """Detached copies of ``params`` (FedProx's ``theta_start``), keyed by ``id(param)``."""
    return {id(p): p.detach().clone() for p in params}


def proximal_term(params: Iterable[nn.Parameter], anchors: dict[int, Tensor], mu: float) -> Tensor:
    """FedProx's ``(mu / 2) * sum_p ||p - p_start||_F^2`` (Li et al., MLSys 2020, eq. 2).

    Its gradient is ``mu * (p - p_start)`` on each ``p``; zero at the start of the job.
    """
    total = sum(((p - anchors[id(p)]) ** 2).sum() for p in params)
    return 0.5 * mu * total  # type: ignore[return-value]


def _dense_on(delta: Delta, device: torch.device) -> Tensor:
    """The ``(d, k)`` delta as float32, formed on ``device`` in the factors' precision (float64 stays)."""
    if isinstance(delta, LowRankDelta):
        dtype = torch.promote_types(torch.promote_types(delta.B.dtype, delta.A.dtype), torch.float32)
        product = LowRankDelta(delta.B.to(device, dtype), delta.A.to(device, dtype), delta.scale).dense()
        return product.to(torch.float32)
    return delta.dense().to(device, torch.float32)


def fold_branch_factors(deltas: Sequence[LowRankDelta], device: torch.device) -> tuple[Tensor, Tensor]:
    """``B = [s_1 B_1 ... s_T B_T]: (d, r_f)`` and ``A = [A_1; ...; A_T]: (r_f, k)`` in float32 on ``device``."""
    B = torch.cat([_factor_on(d.B, device) * d.scale for d in deltas], 1).to(torch.float32)
    A = torch.cat([_factor_on(d.A, device) for d in deltas], 0).to(torch.float32)
    return B, A


def _factor_on(t: Tensor, device: torch.device) -> Tensor:
    """A fold factor on ``device`` in its own precision, at least float32 (float64 stays until the cast)."""
    return t.to(device, torch.promote_types(t.dtype, torch.float32))


def cpu_copy(t: Tensor) -> Tensor:
    """A detached contiguous CPU float32 clone (what an update ships)."""
    return t.detach().to("cpu", torch.float32).contiguous().clone()
