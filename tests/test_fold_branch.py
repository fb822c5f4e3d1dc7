"""A low-rank fold run as a frozen LoRA branch equals the dense merge ``W0 + fold`` (train.fold).

Tolerance: the branch computes ``W0 x + B (A x)``, the merge ``(W0 + B A) x`` with ``B A`` rounded into a
float32 weight; the two summation orders differ by float32 rounding (eps = 1.2e-7) of values of order 1,
so trained factors may differ by a few ulps: ``atol = 1e-6`` (about 8 ulps at 1), ``rtol = 1e-5``. A
wrong branch (missing scale, missing slot, dropout on the fold) changes factors by orders of magnitude more.
"""

import pytest
import torch

from core.synthetic import synthetic_update
from core.wire import LowRankDelta, ModuleSpec
from orchestrator.method_config import MethodConfig
from orchestrator.methods import available_methods, build_method
from tests.method_helpers import ranks_for
from tests.test_local_training import make_trainer, target_weights
from workers.evaluation import evaluate_partial
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = dict(rtol=1e-5, atol=1e-6)
R = 4


def advanced_method(trainer, cfg: MethodConfig, ranks=(1, 2, 4, 4)):
    """The method and its state after one round of synthetic training (non-zero B in every slot)."""
    specs = [ModuleSpec(m, d, k) for m, (d, k) in trainer.shapes().items()]
    ranks = ranks_for(cfg.name, ranks, top=R)
    method = build_method(cfg, specs, list(ranks), R, 0)
    state = method.init_global(None)
    starts = [method.client_start(state, c, 0) for c in range(len(ranks))]
    return method, method.aggregate(state, starts, [synthetic_update(s, 0.3, 10 + s.client_id) for s in starts]).state


FEDPLORA = [
    (MethodConfig(name="fedplora"), dict(optimizer="adamw", lr=1e-2)),
    (MethodConfig(name="fedplora", selection="weight_norm", scaling="rslora", lora_alpha=8.0),
     dict(optimizer="sgd", lr=0.05, lora_dropout=0.1)),
    (MethodConfig(name="fedplora", selection="fixed"), dict(optimizer="adamw", lr=1e-2, lora_dropout=0.1)),
]


@pytest.mark.parametrize("cfg,train", FEDPLORA, ids=["random-adamw", "weight_norm-rslora-sgd-dropout",
                                                      "fixed-adamw-dropout"])
def test_fedplora_job_with_branch_fold_equals_dense_fold(cfg, train, example_factory):
    # Prepare: one trainer per fold mode; a client of rank 2 < R = 4 (two unselected slots are folded)
    examples = example_factory(12)
    dense, branch = make_trainer(fold="dense", **train), make_trainer(fold="auto", **train)
    method, state = advanced_method(dense, cfg)
    start = method.client_start(state, 1, 1)
    assert start.fold and all(isinstance(d, LowRankDelta) for d in start.fold.values())
    pristine = target_weights(branch)

    # Execute
    u_dense, u_branch = dense.train(start, examples), branch.train(start, examples)

    # Assert: auto took the branch and left W0 untouched; updates equal to float32 tolerance
    assert set(dense.fold_modes.values()) == {"dense"} and set(branch.fold_modes.values()) == {"branch"}
    for m, w in target_weights(branch).items():
        assert torch.equal(w, pristine[m]), m
    assert u_branch.train_loss == pytest.approx(u_dense.train_loss, rel=1e-5)
    moved = 0.0
    for m, (B, A) in u_dense.adapters["main"].items():
        torch.testing.assert_close(u_branch.adapters["main"][m][0], B, **TOL)
        torch.testing.assert_close(u_branch.adapters["main"][m][1], A, **TOL)
        moved = max(moved, float((B - start.adapters["main"][m].B).abs().max()))
    assert moved > 1e-3, "the job must train"
    for k, v in u_dense.head.items():
        torch.testing.assert_close(u_branch.head[k], v, **TOL)


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_evaluation_with_branch_equals_dense_for_every_method(name, example_factory):
    examples = example_factory(16)
    dense, branch = make_trainer(fold="dense"), make_trainer(fold="auto")
    method, state = advanced_method(dense, MethodConfig(name=name))
    models = [method.global_delta(state)]
    personal = method.personal_delta(state, 1)
    if personal is not None:
        models.append(personal)
    for deltas in models:
        d, b = evaluate_partial(dense, deltas, None, examples), evaluate_partial(branch, deltas, None, examples)
        parts = [x for v in deltas.values() for x in (v if isinstance(v, list) else [v])]
        low_rank = all(isinstance(x, LowRankDelta) for x in parts)
        assert set(branch.fold_modes.values()) == {"branch" if low_rank else "dense"}
        assert b.preds == d.preds and b.labels == d.labels
        torch.testing.assert_close(torch.tensor(b.loss_sums), torch.tensor(d.loss_sums), rtol=1e-5, atol=1e-6)


def test_auto_merges_a_fold_whose_factors_outgrow_the_weight():
    trainer = make_trainer(fold="auto")
    (m, (d, k)), *_ = trainer.shapes().items()
    big_rank = d * k // (d + k) + 1  # r (d + k) >= d k: the factors are no smaller than the weight
    gen = torch.Generator().manual_seed(0)
    small = LowRankDelta(torch.randn(d, 2, generator=gen), torch.randn(2, k, generator=gen))
    big = LowRankDelta(torch.randn(d, big_rank, generator=gen), torch.randn(big_rank, k, generator=gen))
    trainer.restore_and_fold({m: small})
    assert trainer.fold_modes[m] == "branch"
    trainer.restore_and_fold({m: [small, big]})
    assert trainer.fold_modes[m] == "dense"
    torch.testing.assert_close(trainer.layers[m].get_base_layer().weight, trainer.w0[m] + small.dense() + big.dense())
    trainer.restore_and_fold({})  # back to W0 bitwise, no branch left
    assert torch.equal(trainer.layers[m].get_base_layer().weight, trainer.w0[m])
    assert set(trainer.fold_modes.values()) == {"none"}
    assert not any("_hetfedlora_fold" in layer.lora_A for layer in trainer.layers.values())


def test_fold_option_is_checked():
    with pytest.raises(ValueError, match="train.fold='merge'"):
        TrainConfig(fold="merge")
