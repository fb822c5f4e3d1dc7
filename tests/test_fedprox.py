"""FedProx's proximal term in local training (Li et al., MLSys 2020, eq. 2) on the tiny Llama."""

import dataclasses

import pytest
import torch
from test_local_training import global_factors, make_trainer, start_for

from workers.local_training import proximal_term, start_values

pytestmark = pytest.mark.usefixtures("single_thread")


def test_proximal_gradient_is_mu_times_the_distance_to_the_start(example_factory):
    # Prepare: a start with non-zero B, its factors moved away from their start values
    trainer = make_trainer()
    start = start_for(trainer, 0, seed=3, factors=global_factors(trainer, 3, seed=4))
    trainer.prepare(start)
    params = trainer.set_trainable(start, ("main",))
    anchors = start_values(params)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    batch = trainer.collate(example_factory(4))
    mu = 0.7

    # Execute: the plain gradient, then the gradient with the proximal term
    trainer.loss(dict(batch)).backward()
    plain = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    (trainer.loss(dict(batch)) + proximal_term(params, anchors, mu)).backward()

    # Assert: grad = plain grad + mu (theta - theta_start), on every trainable factor and the head
    assert len(params) == 2 * len(trainer.layers) + len(trainer.loaded.head_names)
    for p, g0 in zip(params, plain):
        expected = g0 + mu * (p.detach() - anchors[id(p)])
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7)
        assert (p.detach() - anchors[id(p)]).abs().max() > 0


def test_proximal_term_value_by_hand():
    p = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    q = torch.nn.Parameter(torch.tensor([0.5]))
    anchors = {id(p): torch.tensor([[1.0, 0.0], [3.0, 1.0]]), id(q): torch.tensor([-0.5])}
    # (mu / 2) (2^2 + 3^2 + 1^2) = 0.25 * 14
    assert proximal_term([p, q], anchors, 0.5).item() == pytest.approx(3.5)


def test_one_sgd_step_later_the_update_moves_by_minus_lr_mu_times_the_first_step(example_factory):
    # Prepare: plain SGD; theta_1 is the same with and without the term (its gradient is 0 at the start)
    examples = example_factory(8)
    lr, mu = 0.5, 0.3
    factors = global_factors(make_trainer(), 3, seed=7)
    plain1 = make_trainer(optimizer="sgd", lr=lr, local_steps=1, batch_size=8)
    prox1 = make_trainer(optimizer="sgd", lr=lr, local_steps=1, batch_size=8, prox_mu=mu)
    plain2 = make_trainer(optimizer="sgd", lr=lr, local_steps=2, batch_size=8)
    prox2 = make_trainer(optimizer="sgd", lr=lr, local_steps=2, batch_size=8, prox_mu=mu)
    start = start_for(plain1, 0, seed=5, factors=factors)

    # Execute
    u_plain1, u_prox1 = plain1.train(start, examples), prox1.train(start, examples)
    u_plain2, u_prox2 = plain2.train(start, examples), prox2.train(start, examples)

    # Assert: step 1 bitwise equal; step 2 differs by exactly -lr * mu * (theta_1 - theta_0)
    for m, (B0, A0) in factors.items():
        for i, theta0 in ((0, B0), (1, A0)):
            assert torch.equal(u_prox1.adapters["main"][m][i], u_plain1.adapters["main"][m][i])
            theta1 = u_plain1.adapters["main"][m][i]
            diff = u_prox2.adapters["main"][m][i] - u_plain2.adapters["main"][m][i]
            torch.testing.assert_close(diff, -lr * mu * (theta1 - theta0), rtol=1e-4, atol=1e-7)
    head_diff = u_prox2.head["score.weight"] - u_plain2.head["score.weight"]
    assert head_diff.abs().max() > 1e-6
    assert any((u_prox2.adapters["main"][m][0] - u_plain2.adapters["main"][m][0]).abs().max() > 1e-6
               for m in factors)


def test_mu_zero_is_plain_training_bitwise(example_factory):
    examples = example_factory(8)
    plain = make_trainer(local_steps=3)
    zero = make_trainer(local_steps=3, prox_mu=0.0)
    prox = make_trainer(local_steps=3, prox_mu=0.5)
    start = start_for(plain, 0, seed=5, factors=global_factors(plain, 3, seed=7))
    a, b, c = plain.train(start, examples), zero.train(start, examples), prox.train(start, examples)
    assert dataclasses.asdict(plain.cfg) == {**dataclasses.asdict(zero.cfg), "prox_mu": 0.0}
    assert a.train_loss == b.train_loss
    for m, (B, A) in a.adapters["main"].items():
        assert torch.equal(b.adapters["main"][m][0], B) and torch.equal(b.adapters["main"][m][1], A)
    assert any(not torch.equal(c.adapters["main"][m][0], B) for m, (B, _) in a.adapters["main"].items())
