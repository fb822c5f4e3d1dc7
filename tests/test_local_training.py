import dataclasses
import math
import time

import pytest
import torch

from core.rng import generator, kaiming_uniform_A
from core.wire import AdapterInit, ClientStart, ClientUpdate, LocalStage, LowRankDelta, TailPenalty
from orchestrator.update_checks import validate_update
from workers.eval_results import combine, shard_ranges
from workers.evaluation import evaluate, evaluate_partial, prepare_eval
from workers.local_training import LocalTrainer, causal_batch, split_steps
from workers.models import ModelConfig, load_model
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = dict(lr=1e-2, local_steps=3, batch_size=4, eval_batch_size=8, max_new_tokens=4)


def make_trainer(name="tiny-llama", task="classification", seed=0, max_length=64, **train):
    loaded = load_model(ModelConfig(name), task, 2 if task == "classification" else None, seed=seed)
    return LocalTrainer(loaded, TrainConfig(**{**FAST, **train}), max_length=max_length)


def global_factors(trainer, R, seed, b_std=0.2):
    """Rank-R global (B, A) per module with NON-ZERO B (nothing passes because B = 0)."""
    out = {}
    for i, (m, (d, k)) in enumerate(trainer.shapes().items()):
        g = generator(seed, "global", m)
        out[m] = (torch.randn(d, R, generator=g) * b_std, kaiming_uniform_A(R, k, g) * (1 + i % 2))
    return out


def start_for(trainer, client_id, seed, factors=None, rank=3, scale=1.0, **kwargs):
    factors = factors or global_factors(trainer, rank, seed)
    adapters = {m: AdapterInit(B, A, scale) for m, (B, A) in factors.items()}
    return ClientStart(client_id=client_id, round=0, seed=seed, rank=rank, fold=kwargs.pop("fold", {}),
                       adapters={"main": adapters}, **kwargs)


@torch.no_grad()
def logits(trainer, examples):
    trainer.model.eval()
    batch = trainer.collate(examples)
    batch.pop("labels")
    return trainer.model(**batch).logits.float()


def target_weights(trainer):
    return {m: layer.get_base_layer().weight.detach().clone() for m, layer in trainer.layers.items()}


# ---------------------------------------------------------------- W0 restore and determinism


@pytest.mark.parametrize("fold", ["dense", "branch"])
def test_second_client_after_first_equals_second_client_alone(fold, example_factory):
    # Prepare: two clients with different folds, seeds and data; LoRA dropout on (seeded streams)
    ex1, ex2 = example_factory(12), example_factory(10, offset=100)
    a = make_trainer(lora_dropout=0.1, fold=fold)
    pristine = target_weights(a)
    fold1 = {m: LowRankDelta(B, A) for m, (B, A) in global_factors(a, 2, seed=1).items()}
    fold2 = {m: LowRankDelta(B, A) for m, (B, A) in global_factors(a, 2, seed=2).items()}
    start1 = start_for(a, 1, seed=11, fold=fold1)
    start2 = start_for(a, 2, seed=22, fold=fold2, rank=4)

    # Execute
    a.train(start1, ex1)
    assert set(a.fold_modes.values()) == {fold}
    merged = not all(torch.equal(w, pristine[m]) for m, w in target_weights(a).items())
    assert merged == (fold == "dense")  # a dense fold changes the weights; a branch leaves W0 in place
    after_first = a.train(start2, ex2)
    alone = make_trainer(lora_dropout=0.1, fold=fold).train(start2, ex2)
    a.restore_and_fold({})

    # Assert: W0 restored bitwise, and the second job is bit-identical to running it alone
    for m, w in target_weights(a).items():
        assert torch.equal(w, pristine[m]), m
    assert after_first.train_loss == alone.train_loss and after_first.steps == alone.steps == 3
    for m, (B, A) in alone.adapters["main"].items():
        assert torch.equal(after_first.adapters["main"][m][0], B)
        assert torch.equal(after_first.adapters["main"][m][1], A)
    for k, v in alone.head.items():
        assert torch.equal(after_first.head[k], v)
    validate_update(start2, after_first)


def test_fold_never_modifies_the_pristine_copy():
    trainer = make_trainer()
    before = {m: w.clone() for m, w in trainer.w0.items()}
    trainer.restore_and_fold({m: LowRankDelta(B, A) for m, (B, A) in global_factors(trainer, 2, 5).items()})
    for m, w in trainer.w0.items():
        assert torch.equal(w, before[m])


# ---------------------------------------------------------------- the fold (Fed-PLoRA) on real models


def fedplora_fold_max_diff(trainer, examples, R=4, K=(0, 2), scale=0.5):
    factors = global_factors(trainer, R, seed=3)
    rest = [j for j in range(R) if j not in K]
    start = ClientStart(
        client_id=0, round=1, seed=9, rank=len(K),
        fold={m: LowRankDelta(B[:, rest], A[rest], scale) for m, (B, A) in factors.items()},
        adapters={"main": {m: AdapterInit(B[:, list(K)], A[list(K)], scale, slots=K)
                           for m, (B, A) in factors.items()}},
        folded_slots={m: tuple(rest) for m in factors})
    prepare_eval(trainer, {}, None)
    base = logits(trainer, examples)
    prepare_eval(trainer, {m: LowRankDelta(B, A, scale) for m, (B, A) in factors.items()}, None)
    global_logits = logits(trainer, examples)
    trainer.prepare(start)  # the client's start-of-round model: W0 + fold, adapters K active
    client_logits = logits(trainer, examples)
    assert (global_logits - base).abs().max() > 1e-3, "the global delta must change the function"
    return float((client_logits - global_logits).abs().max())


def test_fold_start_equals_global_model_tiny_llama(example_factory):
    diff = fedplora_fold_max_diff(make_trainer(), example_factory(6))
    print(f"tiny-llama fold max |client start - global| logits = {diff:.2e}")
    assert diff < 1e-5


@pytest.mark.slow
def test_fold_start_equals_global_model_minilm(example_factory):
    diff = fedplora_fold_max_diff(make_trainer("minilm"), example_factory(6))
    print(f"MiniLM fold max |client start - global| logits = {diff:.2e}")
    assert diff < 1e-5


def test_scaling_is_the_start_scale_exactly():
    trainer = make_trainer()
    start = start_for(trainer, 0, seed=1, rank=3, scale=0.1)  # 0.1 * 3 / 3 != 0.1 in floating point
    trainer.prepare(start)
    assert all(layer.scaling["main"] == 0.1 for layer in trainer.layers.values())


# ---------------------------------------------------------------- pFedLoRA: two active adapters, stages


PFEDLORA_STAGES = (LocalStage(("private",), 0.5), LocalStage(("shared",), 0.5))


def two_adapter_start(trainer, stages=PFEDLORA_STAGES):
    priv = global_factors(trainer, 3, seed=4)
    shared = global_factors(trainer, 2, seed=5)
    return ClientStart(
        client_id=0, round=0, seed=3, rank=3, fold={},
        adapters={"private": {m: AdapterInit(B, A) for m, (B, A) in priv.items()},
                  "shared": {m: AdapterInit(B, A) for m, (B, A) in shared.items()}},
        upload=("shared",), stages=stages), priv, shared


def test_two_active_adapters_forward_equals_w0_plus_both_deltas(example_factory):
    trainer = make_trainer()
    examples = example_factory(5)
    start, priv, shared = two_adapter_start(trainer)
    trainer.prepare(start)
    both = logits(trainer, examples)
    prepare_eval(trainer, {m: [LowRankDelta(*priv[m]), LowRankDelta(*shared[m])] for m in priv}, None)
    reference = logits(trainer, examples)
    prepare_eval(trainer, {m: LowRankDelta(*priv[m]) for m in priv}, None)
    private_only = logits(trainer, examples)
    assert torch.allclose(both, reference, atol=1e-5)
    assert (both - private_only).abs().max() > 1e-3


def test_stages_train_only_the_adapters_they_name(example_factory):
    examples = example_factory(8)
    trainer = make_trainer(local_steps=4)
    start, priv, shared = two_adapter_start(trainer, stages=(LocalStage(("private",), 1.0),
                                                             LocalStage(("shared",), 0.0)))
    update = trainer.train(start, examples)
    for m in priv:
        assert not torch.equal(update.adapters["private"][m][0], priv[m][0])
        assert torch.equal(update.adapters["shared"][m][0], shared[m][0])
        assert torch.equal(update.adapters["shared"][m][1], shared[m][1])
    start2, _, _ = two_adapter_start(trainer)
    update2 = trainer.train(start2, examples)
    m = next(iter(priv))
    assert not torch.equal(update2.adapters["shared"][m][0], shared[m][0])
    assert update.upload == ("shared",) and set(update.adapters) == {"private", "shared"}


def test_split_steps_keeps_every_step():
    assert split_steps(5, [0.5, 0.5]) == [2, 3]  # round(2.5) = 2, round(5) = 5
    assert split_steps(10, [1.0]) == [10]
    assert split_steps(4, [1.0, 0.0]) == [4, 0]


def test_frozen_factor_stays_exactly_at_its_init(example_factory):
    trainer = make_trainer()
    factors = global_factors(trainer, 2, seed=6)
    start = ClientStart(client_id=0, round=0, seed=1, rank=2, fold={},
                        adapters={"main": {m: AdapterInit(B, A, train_A=False) for m, (B, A) in factors.items()}})
    update = trainer.train(start, example_factory(8))
    for m, (B, A) in factors.items():
        assert torch.equal(update.adapters["main"][m][1], A)
        assert not torch.equal(update.adapters["main"][m][0], B)


# ---------------------------------------------------------------- HETLoRA's tail penalty


def test_tail_penalty_equals_the_formula_on_a_hand_case():
    trainer = make_trainer()
    m1, m2 = list(trainer.shapes())[:2]
    (d1, k1), (d2, k2) = trainer.shapes()[m1], trainer.shapes()[m2]
    B1, A1 = torch.zeros(d1, 3), torch.zeros(3, k1)
    B1[0, 2], B1[1, 2], A1[2, 0] = 3.0, 4.0, 2.0  # tail (rank 2): ||B|| = 5, ||A|| = 2
    B1[5, 0], A1[0, 7] = 9.0, 9.0  # ranks below s do not count
    B2, A2 = torch.randn(d2, 3), torch.randn(3, k2)
    start = ClientStart(client_id=0, round=0, seed=1, rank=3, fold={},
                        adapters={"main": {m1: AdapterInit(B1, A1), m2: AdapterInit(B2, A2)}})
    trainer.prepare(start)
    value = trainer.penalty(TailPenalty(lam=0.01, start={m1: 2, m2: 3}))  # m2: empty tail
    assert value.item() == pytest.approx(0.01 * 5.0 * 2.0)


def test_tail_penalty_changes_the_gradient_by_its_own_gradient(example_factory):
    # Prepare: one plain SGD step with and without the penalty from the same start and batch
    examples = example_factory(8)
    cfg = dict(optimizer="sgd", lr=0.5, local_steps=1, batch_size=8)
    trainer = make_trainer(**cfg)
    factors = global_factors(trainer, 4, seed=7)
    s, lam = 2, 0.3
    start = start_for(trainer, 0, seed=5, factors=factors, rank=4)
    penalised = dataclasses.replace(start, penalty=TailPenalty(lam=lam, start={m: s for m in factors}))

    # Execute
    plain = trainer.train(start, examples)
    with_pen = trainer.train(penalised, examples)

    # Assert: the difference is -lr * d(penalty): on the tail only, lam ||A_t|| B_t / ||B_t||
    for m, (B0, A0) in factors.items():
        Bt, At = B0[:, s:], A0[s:, :]
        dB = with_pen.adapters["main"][m][0] - plain.adapters["main"][m][0]
        dA = with_pen.adapters["main"][m][1] - plain.adapters["main"][m][1]
        assert torch.allclose(dB[:, s:], -0.5 * lam * At.norm() * Bt / Bt.norm(), atol=1e-6)
        assert torch.allclose(dA[s:], -0.5 * lam * Bt.norm() * At / At.norm(), atol=1e-6)
        assert dB[:, :s].abs().max() < 1e-6 and dA[:s].abs().max() < 1e-6
        assert dB[:, s:].abs().max() > 1e-3


# ---------------------------------------------------------------- what the update carries


def leaves(obj, path="update"):
    if isinstance(obj, torch.Tensor | int | float | str | type(None)):
        yield path, obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from leaves(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), f"{path} has a non-string key {k!r}"
            yield from leaves(v, f"{path}[{k}]")
    elif isinstance(obj, tuple):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    else:
        raise AssertionError(f"{path} is a {type(obj).__name__}; an update carries only tensors and counts")


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_update_carries_only_adapter_and_head_tensors_and_counts(task, example_factory):
    trainer = make_trainer(task=task)
    start = start_for(trainer, 3, seed=2, rank=2)
    update = trainer.train(start, example_factory(8))
    shapes = {tuple(t.shape) for per in start.adapters.values() for i in per.values() for t in (i.B, i.A)}
    shapes |= {tuple(p.shape) for n, p in trainer.model.named_parameters() if n in trainer.loaded.head_names}
    assert isinstance(update, ClientUpdate)
    for path, leaf in leaves(update):
        if isinstance(leaf, torch.Tensor):
            assert leaf.dtype == torch.float32 and leaf.device.type == "cpu" and leaf.is_contiguous(), path
            assert tuple(leaf.shape) in shapes, f"{path} has shape {tuple(leaf.shape)}"
            assert leaf.grad_fn is None and not leaf.requires_grad
        elif isinstance(leaf, str):
            assert path.startswith("update.upload"), f"{path} is text: {leaf!r}"
        else:
            assert leaf is None or isinstance(leaf, int | float), path
    assert (update.n_examples, update.steps, update.client_id) == (8, 3, 3)
    assert (update.head is None) == (task == "causal_lm")
    assert math.isfinite(update.train_loss) and update.compute_seconds > 0


# ---------------------------------------------------------------- causal LM


def test_causal_batch_masks_the_prompt():
    trainer = make_trainer(task="causal_lm")
    from workers.data import Example

    batch = causal_batch(trainer.tokenizer, [Example("Q: 2+2?", target=" 4"), Example("Hi", target=" yo")], 64)
    tok = trainer.tokenizer
    n_prompt = len(tok("Q: 2+2?")["input_ids"])
    row = batch["labels"][0]
    assert (row[:n_prompt] == -100).all()
    target = tok(" 4", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert row[n_prompt:].tolist()[:len(target)] == target
    assert (row[n_prompt + len(target):] == -100).all()
    assert (batch["labels"][1][batch["attention_mask"][1] == 0] == -100).all()


def test_causal_train_and_evaluate_on_tiny_llama(example_factory):
    trainer = make_trainer(task="causal_lm", local_steps=4)
    examples = example_factory(8, task="causal_lm")
    start = start_for(trainer, 0, seed=1, rank=2)
    update = trainer.train(start, examples)
    metrics = evaluate(trainer, {m: LowRankDelta(*f) for m, f in update.adapters["main"].items()}, None, examples[:4])
    assert set(metrics) == {"rouge_l", "loss", "n_examples"} and 0.0 <= metrics["rouge_l"] <= 1.0
    assert math.isfinite(metrics["loss"]) and update.steps == 4


@pytest.mark.slow
def test_causal_train_and_evaluate_on_smollm2():
    from workers.data import load_examples
    from workers.data_config import DataConfig

    pool = load_examples(DataConfig(dataset="rotten_tomatoes_instruct"))
    examples = pool.examples[:6]
    trainer = make_trainer("smollm2", task="causal_lm", lr=1e-3, local_steps=2, batch_size=2, max_length=64,
                           max_new_tokens=3)
    start = start_for(trainer, 0, seed=1, factors={m: (torch.zeros(d, 4), kaiming_uniform_A(4, k, generator(0, m)))
                                                   for m, (d, k) in trainer.shapes().items()}, rank=4)
    update = trainer.train(start, examples[:4])
    metrics = evaluate(trainer, {m: LowRankDelta(*f) for m, f in update.adapters["main"].items()}, None,
                       examples[4:])
    print(f"SmolLM2: train loss {update.train_loss:.3f}, {update.compute_seconds:.1f} s; eval {metrics}")
    assert math.isfinite(update.train_loss) and update.steps == 2
    assert 0.0 <= metrics["rouge_l"] <= 1.0 and math.isfinite(metrics["loss"])


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_sharded_evaluation_equals_the_whole_for_any_number_of_shards(task, example_factory):
    trainer = make_trainer(task=task, eval_batch_size=3)
    examples = example_factory(11, task=task)
    update = trainer.train(start_for(trainer, 0, seed=5, rank=2), examples[:6])
    deltas = {m: LowRankDelta(*f) for m, f in update.adapters["main"].items()}
    whole = evaluate(trainer, deltas, update.head, examples)
    for shards in (2, 3, 4, 9):
        ranges = shard_ranges(len(examples), 3, shards)
        assert ranges[0][0] == 0 and ranges[-1][1] == 11 and all(a % 3 == 0 for a, _ in ranges)
        parts = [evaluate_partial(trainer, deltas, update.head, examples[a:b]) for a, b in ranges]
        assert combine(parts) == whole, shards  # bitwise: same batches, exactly rounded sums


# ---------------------------------------------------------------- a short real run


@pytest.mark.slow
def test_minilm_rotten_tomatoes_short_federated_run_beats_the_untrained_model():
    # Prepare: MiniLM, Rotten Tomatoes (offline, via the data layer), 3 clients, one FedIT-style round
    from workers.data_config import DataConfig
    from workers.partition import load_federated

    data = load_federated(DataConfig(num_clients=3, global_test_size=200, max_examples=600), seed=0)
    trainer = make_trainer("minilm", lr=5e-3, local_steps=5, batch_size=16, eval_batch_size=100)
    R = 4
    init = {m: (torch.zeros(d, R), kaiming_uniform_A(R, k, generator(0, "A", m))) for m, (d, k) in
            trainer.shapes().items()}
    before = evaluate(trainer, {}, None, data.global_test)

    # Execute: every client trains from the global init; the server averages B, A and the head by data size
    updates = []
    t0 = time.perf_counter()
    for c in data.clients:
        updates.append(trainer.train(start_for(trainer, c.client, seed=100 + c.client, factors=init, rank=R),
                                     c.train))
    per_step = (time.perf_counter() - t0) / sum(u.steps for u in updates)
    n = sum(u.n_examples for u in updates)
    w = [u.n_examples / n for u in updates]
    avg = {m: (sum(wi * u.adapters["main"][m][0] for wi, u in zip(w, updates)),
               sum(wi * u.adapters["main"][m][1] for wi, u in zip(w, updates))) for m in init}
    head = {k: sum(wi * u.head[k] for wi, u in zip(w, updates)) for k in updates[0].head}
    after = evaluate(trainer, {m: LowRankDelta(B, A) for m, (B, A) in avg.items()}, head, data.global_test)

    # Assert
    print(f"MiniLM RT: accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}; "
          f"{per_step:.2f} s per step (batch 16, max 64 tokens)")
    assert after["accuracy"] >= before["accuracy"] + 0.05
    assert after["loss"] < before["loss"]
