"""Packed local training (workers.packed_training): k client jobs in one forward/backward per step.

Tolerance (dropout off): a packed client's update equals its solo update up to float32 rounding of the frozen
base's matmuls on the larger, longer-padded batch (see the module docstring): factors and heads to
``rtol = 1e-4, atol = 1e-5`` after 2-3 AdamW steps at lr 1e-2, the loss to ``rel = 1e-5``. A row that saw another
client's adapter, fold or head, or an optimizer fed another client's gradient, moves a factor by about ``lr``
(1e-2) per step: three orders of magnitude above the tolerance, which the tests check the updates exceed.
"""

import dataclasses

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from core.synthetic import synthetic_update
from core.wire import AdapterInit, DenseDelta, LocalStage, LowRankDelta, ModuleSpec, TailPenalty
from orchestrator.method_config import MethodConfig
from orchestrator.methods import available_methods, build_method
from tests.method_helpers import ranks_for
from tests.test_local_training import FAST, global_factors, make_trainer, start_for
from workers.local_training import LocalTrainer, token_lengths
from workers.models import ModelConfig, load_model
from workers.packed_training import PACKED, SOLO, ClientLoRA, packed_lora_forward, plan_pack, train_pack
from workers.precision import GpuMemoryError
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = dict(rtol=1e-4, atol=1e-5)
SIZES = (5, 9, 12)  # local_epochs=1, batch 4: 2, 3 and 3 steps, the last batch of each epoch short


def same_update(a, b):
    """Bitwise equal updates (everything but the wall time)."""
    assert (a.client_id, a.round, a.n_examples, a.steps, a.upload, a.train_loss) == \
        (b.client_id, b.round, b.n_examples, b.steps, b.upload, b.train_loss)
    for name, per in a.adapters.items():
        for m, (B, A) in per.items():
            assert torch.equal(b.adapters[name][m][0], B) and torch.equal(b.adapters[name][m][1], A), (name, m)
    assert (a.head is None) == (b.head is None)
    for k, v in (a.head or {}).items():
        assert torch.equal(b.head[k], v), k


def close_update(packed, solo, start):
    """Equal to the tolerance above, and trained far beyond it (so a wrong pack cannot pass)."""
    assert (packed.client_id, packed.n_examples, packed.steps, packed.upload) == \
        (solo.client_id, solo.n_examples, solo.steps, solo.upload)
    assert packed.train_loss == pytest.approx(solo.train_loss, rel=1e-5)
    moved = 0.0
    for name, per in solo.adapters.items():
        for m, (B, A) in per.items():
            torch.testing.assert_close(packed.adapters[name][m][0], B, **TOL)
            torch.testing.assert_close(packed.adapters[name][m][1], A, **TOL)
            init = start.adapters[name][m]
            moved = max(moved, float((B - init.B).abs().max()), float((A - init.A).abs().max()))
    assert moved > 1e-3, "the job must train"
    assert (packed.head is None) == (solo.head is None)
    for k, v in (solo.head or {}).items():
        torch.testing.assert_close(packed.head[k], v, **TOL)


def differ(a, b):
    """Two clients' updates are not the same numbers: their first module's ``B A`` of the uploaded adapter differ."""
    name = a.upload[0]
    m = next(iter(a.adapters[name]))
    (Ba, Aa), (Bb, Ab) = a.adapters[name][m], b.adapters[name][m]
    return not torch.allclose(Ba @ Aa, Bb @ Ab, atol=1e-3)


# ---------------------------------------------------------------- the packed layer against PEFT's layer


def test_packed_lora_layer_equals_peft_layer_outputs_and_gradients():
    # Prepare: one PEFT LoRA linear (k=6 -> d=5) holding three clients' adapters; client 1 has two adapters
    # (summed, pFedLoRA), client 2 an adapter and a frozen fold branch of rank 2 (scaling 1)
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(5, 6, generator=gen))
        net[0].bias.copy_(torch.randn(5, generator=gen))
    inject_adapter_in_model(LoraConfig(r=1, lora_alpha=1, target_modules=["0"], init_lora_weights=False), net,
                            adapter_name="placeholder")
    layer = net[0]
    layer.delete_adapter("placeholder")
    clients = {0: {"c0": (1, 0.5)}, 1: {"c1a": (2, 1.0), "c1b": (3, 0.25)}, 2: {"c2": (2, 2.0), "fold": (2, 1.0)}}
    for per in clients.values():
        for name, (r, scale) in per.items():
            layer.update_layer(name, r, lora_alpha=r, config=LoraConfig(r=1, lora_alpha=1, init_lora_weights=False))
            layer.scaling[name] = scale
            with torch.no_grad():
                layer.lora_A[name].weight.copy_(torch.randn(r, 6, generator=gen))
                layer.lora_B[name].weight.copy_(torch.randn(5, r, generator=gen))
    rows = {0: 2, 1: 3, 2: 1}
    xs = {c: torch.randn(n, 4, 6, generator=gen) for c, n in rows.items()}
    ws = {c: torch.randn(n, 4, 5, generator=gen) for c, n in rows.items()}

    # Execute (reference): PEFT's forward and backward, one client at a time with its adapters active
    ref = {}
    for c, per in clients.items():
        layer.set_adapter(list(per))
        layer.requires_grad_(False)
        params = {n: (layer.lora_A[n].weight.requires_grad_(n != "fold"),
                      layer.lora_B[n].weight.requires_grad_(n != "fold")) for n in per}
        x = xs[c].clone().requires_grad_(True)
        y = layer(x)
        (y * ws[c]).sum().backward()
        ref[c] = (y.detach(), x.grad, {n: (A.grad, B.grad) for n, (A, B) in params.items() if n != "fold"})

    # Execute (packed): copies of the factors as ClientLoRA, one forward over the concatenated rows
    lora, seg, lo = {}, [], 0
    for c, per in clients.items():
        adapters = {n: {"0": (layer.lora_A[n].weight.detach().clone().requires_grad_(True),
                              layer.lora_B[n].weight.detach().clone().requires_grad_(True), layer.scaling[n])}
                    for n in per if n != "fold"}
        branch = {"0": (layer.lora_B["fold"].weight.detach().clone(), layer.lora_A["fold"].weight.detach().clone())} \
            if "fold" in per else {}
        lora[c] = ClientLoRA(adapters, branch)
        seg.append((lo, lo + rows[c], lora[c]))
        lo += rows[c]
    x = torch.cat([xs[c] for c in clients]).requires_grad_(True)
    y = packed_lora_forward(layer, "0", seg, x)
    (y * torch.cat([ws[c] for c in clients])).sum().backward()

    # Assert: per client the rows, the input gradient and every factor gradient equal PEFT's
    for lo, hi, client in seg:
        c = next(k for k, v in lora.items() if v is client)
        y_ref, gx_ref, grads = ref[c]
        torch.testing.assert_close(y[lo:hi], y_ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(x.grad[lo:hi], gx_ref, rtol=1e-6, atol=1e-6)
        for n, (gA, gB) in grads.items():
            A, B, _ = client.adapters[n]["0"]
            torch.testing.assert_close(A.grad, gA, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(B.grad, gB, rtol=1e-6, atol=1e-6)
    # and the segments isolate: client 1's rows differ from what client 0's adapter would give them
    layer.set_adapter(["c0"])
    with torch.no_grad():
        assert (layer(xs[1]) - y[2:5]).abs().max() > 1e-2


# ---------------------------------------------------------------- every method: packed == solo


def method_starts(trainer, name, round_=1):
    """Three real starts of ``name`` (ranks 1, 2, 4 where allowed) after one synthetic round (non-zero B)."""
    specs = [ModuleSpec(m, d, k) for m, (d, k) in trainer.shapes().items()]
    ranks = ranks_for(name, (1, 2, 4), top=4)
    method = build_method(MethodConfig(name=name), specs, ranks, 4, 0)
    state = method.init_global(None)
    starts = [method.client_start(state, c, 0) for c in range(3)]
    state = method.aggregate(state, starts, [synthetic_update(s, 0.3, 10 + s.client_id) for s in starts]).state
    return [method.client_start(state, c, round_) for c in range(3)]


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_packed_update_equals_solo_update_for_every_method(name, example_factory):
    # Prepare: three clients with different ranks, data sizes and step counts; clipping on (per client norm)
    trainer = make_trainer(local_epochs=1, grad_clip=0.5)
    starts = method_starts(trainer, name)
    examples = [example_factory(n, offset=100 * i) for i, n in enumerate(SIZES)]
    solo = [make_trainer(local_epochs=1, grad_clip=0.5).train(s, ex) for s, ex in zip(starts, examples)]

    # Execute
    packed = train_pack(trainer, starts, examples, [None] * 3)

    # Assert: one packed group; each client's update is its solo update; the clients' updates differ
    assert [g.path for g in trainer.last_pack.groups] == [PACKED]
    assert [u.steps for u in packed] == [2, 3, 3]
    for p, s, start in zip(packed, solo, starts):
        close_update(p, s, start)
    assert differ(packed[1], packed[2]) and differ(packed[0], packed[2])


@pytest.mark.parametrize("task", ["causal_lm", "mean-pooling"])
def test_packed_equals_solo_with_prox_sgd_stages_and_penalty(task, example_factory):
    # Prepare: SGD with momentum and weight decay, FedProx, a two-stage start with a tail penalty, local_steps
    # (equal step counts, different batch sizes: 3 < batch 4 for the first client)
    kind = "causal_lm" if task == "causal_lm" else "classification"
    opts = dict(optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=0.01, prox_mu=0.5, local_steps=3,
                grad_clip=1.0)
    make = (lambda: make_trainer(task=kind, **opts)) if kind == "causal_lm" else \
        (lambda: _mean_pooling_trainer(**opts))
    trainer = make()
    starts = []
    for c, r in enumerate((1, 3, 2)):
        second = global_factors(trainer, 2, seed=50 + c)
        start = start_for(trainer, c, seed=10 + c, rank=r)
        starts.append(dataclasses.replace(
            start, adapters={**start.adapters, "extra": {m: AdapterInit(B, A, 0.5) for m, (B, A) in second.items()}},
            stages=(LocalStage(("main",), 0.4), LocalStage(("extra", "main"), 0.6)),
            penalty=None if c == 1 else _penalty(trainer, r)))
    examples = [example_factory(n, task=kind, offset=30 * i) for i, n in enumerate((3, 8, 6))]
    solo = [make().train(s, ex) for s, ex in zip(starts, examples)]

    # Execute
    packed = train_pack(trainer, starts, examples, [None] * 3)

    # Assert
    for p, s, start in zip(packed, solo, starts):
        close_update(p, s, start)
    assert differ(packed[0], packed[1])


def _penalty(trainer, r):
    return TailPenalty(lam=0.05, start={m: max(r - 1, 0) for m in trainer.shapes()})


def _mean_pooling_trainer(**opts):
    loaded = load_model(ModelConfig("tiny-llama", pooling="mean"), "classification", 2, seed=0)
    return LocalTrainer(loaded, TrainConfig(**{**FAST, **opts}))


# ---------------------------------------------------------------- k = 1, folds, determinism, model state


def test_a_pack_of_one_is_the_solo_job_bitwise(example_factory):
    ex = example_factory(9)
    fold = {m: LowRankDelta(B, A) for m, (B, A) in global_factors(make_trainer(), 2, seed=3).items()}
    start = start_for(make_trainer(), 4, seed=7, fold=fold, rank=2)
    trainer = make_trainer(lora_dropout=0.1)
    (update,) = train_pack(trainer, [start], [ex], [None])
    same_update(update, make_trainer(lora_dropout=0.1).train(start, ex))
    assert [g.path for g in trainer.last_pack.groups] == [SOLO]


def test_shared_dense_fold_is_merged_once_and_differing_dense_folds_run_alone(example_factory):
    # Prepare: clients 0 and 2 share a dense fold (equal values in distinct tensors), client 1 has another;
    # client 3 shares client 1's by fold key
    trainer = make_trainer()
    gen = torch.Generator().manual_seed(1)
    f1 = {m: torch.randn(d, k, generator=gen) * 0.05 for m, (d, k) in trainer.shapes().items()}
    f2 = {m: torch.randn(d, k, generator=gen) * 0.05 for m, (d, k) in trainer.shapes().items()}
    folds = [{m: DenseDelta(w.clone()) for m, w in f1.items()}, {m: DenseDelta(w) for m, w in f2.items()},
             {m: DenseDelta(w.clone()) for m, w in f1.items()}, {m: DenseDelta(w.clone()) for m, w in f2.items()}]
    keys = [None, "dW-2", None, "dW-2"]
    starts = [start_for(trainer, c, seed=20 + c, rank=1 + c % 3, fold=folds[c]) for c in range(4)]
    examples = [example_factory(n, offset=40 * i) for i, n in enumerate((6, 9, 4, 7))]

    # Execute
    plan = plan_pack(trainer, starts, keys)
    packed = train_pack(trainer, starts, examples, keys)

    # Assert: groups (0, 2) and (1, 3), each packed on its own merged weight; every update equals its solo one
    assert [(g.clients, g.path) for g in plan.groups] == [((0, 2), PACKED), ((1, 3), PACKED)]
    assert plan.path_of(3) == PACKED and plan.groups[1].reason == "one shared dense fold merged once"
    for m, layer in trainer.layers.items():  # the last group's fold sits in the shared base weight
        torch.testing.assert_close(layer.get_base_layer().weight, trainer.w0[m] + f2[m])
    for s, ex, p in zip(starts, examples, packed):
        close_update(p, make_trainer().train(s, ex), s)
    lone = train_pack(trainer, starts[:2], examples[:2], [None, None])
    assert [(g.clients, g.path) for g in trainer.last_pack.groups] == [((0,), SOLO), ((1,), SOLO)]
    same_update(lone[0], make_trainer().train(starts[0], examples[0]))


def test_fedplora_low_rank_folds_run_as_per_client_branches(example_factory):
    trainer = make_trainer(fold="auto")
    starts = method_starts(trainer, "fedplora")
    assert all(s.fold for s in starts[:2]) and starts[0].folded_slots != starts[1].folded_slots
    examples = [example_factory(8, offset=10 * i) for i in range(3)]
    packed = train_pack(trainer, starts, examples, [None] * 3)
    assert [g.path for g in trainer.last_pack.groups] == [PACKED]
    for s, ex, p in zip(starts, examples, packed):
        close_update(p, make_trainer(fold="dense").train(s, ex), s)  # the branch computes the merged model


def test_same_pack_is_deterministic_with_dropout_and_independent_of_what_ran_before(example_factory):
    # Prepare: LoRA dropout on; pack P2 runs after another pack on one trainer, and alone on a fresh one
    opts = dict(lora_dropout=0.2, local_epochs=1)
    a = make_trainer(**opts)
    starts = method_starts(a, "fedplora")
    examples = [example_factory(n, offset=100 * i) for i, n in enumerate(SIZES)]
    other = [start_for(a, 7, seed=70, rank=2), start_for(a, 8, seed=80, rank=3)]

    # Execute
    train_pack(a, other, [example_factory(6), example_factory(5)], [None, None])
    after_other = train_pack(a, starts, examples, [None] * 3)
    again = train_pack(a, starts, examples, [None] * 3)
    fresh = train_pack(make_trainer(**opts), starts, examples, [None] * 3)

    # Assert: bitwise equal each time; the dropout masks really act (the result differs from dropout off)
    for x, y, z in zip(after_other, again, fresh):
        same_update(x, y)
        same_update(x, z)
    no_dropout = train_pack(make_trainer(local_epochs=1), starts, examples, [None] * 3)
    assert differ(no_dropout[2], fresh[2])


def test_a_solo_job_after_a_pack_equals_a_fresh_trainer_bitwise(example_factory):
    trainer = make_trainer(lora_dropout=0.1)
    starts = method_starts(trainer, "pfedlora")
    train_pack(trainer, starts, [example_factory(6, offset=9 * i) for i in range(3)], [None] * 3)
    assert not trainer.model.training and not any(p.requires_grad for p in trainer.model.parameters())
    assert not any("forward" in vars(m) for m in trainer.model.modules())
    assert trainer.adapter_names == ()
    start = start_for(trainer, 5, seed=3, rank=2)
    fresh = make_trainer(lora_dropout=0.1).train(start, example_factory(7))
    same_update(trainer.train(start, example_factory(7)), fresh)


def test_out_of_memory_in_a_pack_names_its_clients(example_factory, monkeypatch):
    trainer = make_trainer()
    starts = [start_for(trainer, c, seed=c, rank=2) for c in (3, 5)]

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer.model, "forward", no_memory)
    with pytest.raises(GpuMemoryError, match=r"the pack of clients 3, 5 in round 1"):
        train_pack(trainer, starts, [example_factory(4), example_factory(4)], [None, None])
    monkeypatch.undo()
    assert not trainer.model.training and not any("forward" in vars(m) for m in trainer.layers.values())


def test_pack_arguments_are_checked(example_factory):
    trainer = make_trainer()
    start = start_for(trainer, 1, seed=1)
    with pytest.raises(ValueError, match="one examples list and one fold key per start"):
        train_pack(trainer, [start, start], [example_factory(2)], [None, None])
    with pytest.raises(ValueError, match=r"each client once; got client ids \[1, 1\]"):
        train_pack(trainer, [start, start], [example_factory(2)] * 2, [None, None])
    bad = dataclasses.replace(start, client_id=2, stages=(LocalStage(("nope",)),))
    with pytest.raises(ValueError, match="a local stage trains adapters"):
        train_pack(trainer, [start, bad], [example_factory(2)] * 2, [None, None])


def test_clients_with_no_examples_take_no_step(example_factory):
    trainer = make_trainer()
    starts = [start_for(trainer, c, seed=c, rank=2) for c in (0, 1)]
    empty, full = train_pack(trainer, starts, [[], example_factory(5)], [None, None])
    assert (empty.steps, empty.train_loss, empty.n_examples) == (0, 0.0, 0) and full.steps == 3
    for m, init in starts[0].adapters["main"].items():
        assert torch.equal(empty.adapters["main"][m][0], init.B)



def test_gradient_checkpointing_replays_the_packed_forward_and_its_dropout_masks(example_factory):
    # The recomputed forward in the backward pass must see the same segments and the same LoRA dropout masks
    starts = [start_for(make_trainer(), c, seed=c, rank=1 + c) for c in range(3)]
    examples = [example_factory(n, offset=20 * i) for i, n in enumerate((4, 7, 6))]
    plain = train_pack(make_trainer(lora_dropout=0.3), starts, examples, [None] * 3)
    checkpointed = train_pack(make_trainer(lora_dropout=0.3, gradient_checkpointing=True), starts, examples, [None] * 3)
    for p, c, s in zip(plain, checkpointed, starts):
        close_update(c, p, s)


def test_lora_dropout_masks_depend_on_the_client_alone(example_factory):
    # tiny-llama has no backbone dropout: with LoRA dropout on, client 0's result is the same in two packs whose
    # other clients (seeds, ranks, data, sequence lengths) differ, and differs with another seed of its own
    trainer = make_trainer(lora_dropout=0.3)
    mine = start_for(trainer, 0, seed=5, rank=2)
    others = [start_for(trainer, c, seed=40 + c, rank=c) for c in (1, 2, 3)]
    ex = example_factory(7)
    tails = (" and a much longer tail", " and a longer tail", "")  # other sizes and lengths, so other padding
    longer = [[dataclasses.replace(e, text=e.text + tail) for e in example_factory(9 - i, offset=50)]
              for i, tail in enumerate(tails)]
    widths = [max(token_lengths(trainer.tokenizer, x, "classification")) for x in (ex, *longer)]
    assert widths[1] > widths[3] and widths[1] < trainer.max_length
    a = train_pack(trainer, [mine, *others[:2]], [ex, longer[0], longer[1]], [None] * 3)[0]
    b = train_pack(trainer, [mine, others[2]], [ex, longer[2]], [None] * 2)[0]
    c = train_pack(trainer, [dataclasses.replace(mine, seed=6), others[2]], [ex, longer[2]], [None] * 2)[0]
    close_update(a, b, mine)
    assert differ(a, c)


def test_packed_training_under_bf16_autocast(example_factory):
    # bf16 rounds the base's matmuls per shape (module docstring): the losses agree to bf16 precision, and the
    # update is float32 and trained
    trainer = make_trainer(autocast="bf16", local_epochs=1)
    starts = method_starts(trainer, "pfedlora")
    examples = [example_factory(n, offset=100 * i) for i, n in enumerate(SIZES)]
    packed = train_pack(trainer, starts, examples, [None] * 3)
    solo = [make_trainer(autocast="bf16", local_epochs=1).train(s, ex) for s, ex in zip(starts, examples)]
    for p, s in zip(packed, solo):
        assert p.steps == s.steps and p.train_loss == pytest.approx(s.train_loss, rel=1e-2)
        assert all(t.dtype == torch.float32 for per in p.adapters.values() for pair in per.values() for t in pair)
    assert differ(packed[1], packed[2])
