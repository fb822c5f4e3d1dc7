"""Evaluation of a model given as deltas: ``W = W0 + sum(deltas[m])`` on every target module, plus a head.

The deltas are applied to pristine ``W0`` by the same fold the training start uses (merged, or a frozen
low-rank branch: ``train.fold``) with no trainable adapter in the forward, so the global model of any method
and a client's personalised model (e.g. pFedLoRA's ``W0 + private + shared``: a list of deltas per module)
are evaluated by one code path.

- classification: ``accuracy``, ``mcc`` (Matthews correlation) and the mean cross-entropy ``loss``;
- causal LM: ``rouge_l`` of greedy generations (``max_new_tokens``) against the targets, and ``loss``,
  the mean next-token cross-entropy over the target tokens (teacher forcing).

:func:`evaluate_partial` returns the per-example numbers of one shard (``workers.eval_results``), which
the driver combines exactly across workers; :func:`evaluate` is the one-shard case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from core.wire import Delta
from workers.eval_results import EvalPartial, combine
from workers.local_training import IGNORE_INDEX, LocalTrainer, causal_batch, prompt_of
from workers.task_metrics import rouge_l_scores


def evaluate(trainer: LocalTrainer, deltas: dict[str, Delta | Sequence[Delta]],
             head: dict[str, Tensor] | None, examples: Sequence[Any]) -> dict[str, float]:
    """Metrics of ``W0 + deltas`` (+ ``head``; ``None`` = the model's initial head) on ``examples``."""
    return combine([evaluate_partial(trainer, deltas, head, examples)])


def evaluate_partial(trainer: LocalTrainer, deltas: dict[str, Delta | Sequence[Delta]],
                     head: dict[str, Tensor] | None, examples: Sequence[Any],
                     fold_key: str | None = None) -> EvalPartial:
    """Per-example results of ``W0 + deltas`` (+ ``head``) on ``examples`` (one shard; see ``eval_results``).

    ``fold_key``: see :meth:`workers.local_training.LocalTrainer.restore_and_fold`.
    """
    if not examples:
        raise ValueError("evaluate needs at least one example")
    prepare_eval(trainer, deltas, head, fold_key)
    with trainer.autocast():
        if trainer.task == "classification":
            return _classification(trainer, examples)
        return _causal(trainer, examples)


def prepare_eval(trainer: LocalTrainer, deltas: dict[str, Delta | Sequence[Delta]],
                 head: dict[str, Tensor] | None, fold_key: str | None = None) -> None:
    """Fold ``deltas`` into pristine ``W0``, load ``head``, remove every adapter, switch to eval mode."""
    trainer.restore_and_fold(deltas, fold_key)
    trainer.load_head(head)
    trainer.clear_adapters()
    trainer.model.eval()


@torch.no_grad()
def _classification(trainer: LocalTrainer, examples: Sequence[Any]) -> EvalPartial:
    out = EvalPartial("classification")
    size = trainer.cfg.eval_batch_size
    for i in range(0, len(examples), size):
        batch = trainer.collate(examples[i: i + size])
        y = batch.pop("labels")
        logits = trainer.model(**batch).logits.float()
        out.loss_sums.extend(F.cross_entropy(logits, y, reduction="none").double().tolist())
        out.preds.extend(logits.argmax(-1).tolist())
        out.labels.extend(y.tolist())
    out.loss_counts = [1] * len(out.loss_sums)
    return out


@torch.no_grad()
def _causal(trainer: LocalTrainer, examples: Sequence[Any]) -> EvalPartial:
    out = EvalPartial("causal_lm")
    size = trainer.cfg.eval_batch_size
    for i in range(0, len(examples), size):
        chunk = examples[i: i + size]
        batch = {k: v.to(trainer.device) for k, v in
                 causal_batch(trainer.tokenizer, chunk, trainer.max_length).items()}
        labels = batch.pop("labels")[:, 1:]
        logits = trainer.model(**batch).logits[:, :-1].float()
        token_loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
        out.loss_sums.extend(token_loss.double().sum(1).tolist())
        out.loss_counts.extend((labels != IGNORE_INDEX).sum(1).tolist())
        generations = generate(trainer, [prompt_of(ex) for ex in chunk])
        out.rouge.extend(rouge_l_scores(generations, [str(ex.target) for ex in chunk]))
    return out


def generate(trainer: LocalTrainer, prompts: Sequence[str]) -> list[str]:
    """Greedy continuations (decoded, special tokens dropped) of left-padded prompts."""
    tok = trainer.tokenizer
    ids = [tok(p)["input_ids"][-(trainer.max_length):] for p in prompts]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):  # left padding: the generated tokens line up at the right
        input_ids[row, width - len(x):] = torch.tensor(x)
        mask[row, width - len(x):] = 1
    out = trainer.model.generate(input_ids=input_ids.to(trainer.device), attention_mask=mask.to(trainer.device),
                                 max_new_tokens=trainer.cfg.max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return [tok.decode(row[width:], skip_special_tokens=True) for row in out]
