"""GPU readiness on the CPU: autocast, gradient checkpointing, peak memory field, the out-of-memory message."""

import pickle

import pytest
import torch

from core.rng import generator, kaiming_uniform_A
from core.wire import AdapterInit, ClientStart
from workers.local_training import LocalTrainer
from workers.models import ModelConfig, load_model
from workers.precision import GpuMemoryError, oom_message, oom_types
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = dict(lr=1e-2, local_steps=3, batch_size=4, lora_dropout=0.1)


def trainer_for(**train):
    loaded = load_model(ModelConfig("tiny-llama"), "classification", 2, seed=0)
    return LocalTrainer(loaded, TrainConfig(**{**FAST, **train}), max_length=32)


def start_for(trainer, rank=2):
    adapters = {}
    for m, (d, k) in trainer.shapes().items():
        g = generator(5, "init", m)
        adapters[m] = AdapterInit(torch.randn(d, rank, generator=g) * 0.1, kaiming_uniform_A(rank, k, g))
    return ClientStart(client_id=1, round=0, seed=7, rank=rank, fold={}, adapters={"main": adapters})


def factors(update):
    return [t for per_module in update.adapters["main"].values() for t in per_module]


def test_gradient_checkpointing_leaves_the_update_unchanged(example_factory):
    examples = example_factory(12)
    plain, ckpt = trainer_for(), trainer_for(gradient_checkpointing=True)
    assert ckpt.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    a, b = plain.train(start_for(plain), examples), ckpt.train(start_for(ckpt), examples)
    start = start_for(plain)
    assert float((a.adapters["main"][next(iter(start.adapters["main"]))][0]
                  - next(iter(start.adapters["main"].values())).B).norm()) > 0  # it trained
    # same arithmetic, recomputed; dropout masks replayed from the saved RNG state
    for x, y in zip(factors(a), factors(b)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
    assert a.peak_memory_bytes is None  # no CUDA: no GPU peak


def test_bf16_autocast_trains_close_to_float32_and_keeps_float32_factors(example_factory):
    examples = example_factory(12)
    fp32, bf16 = trainer_for(), trainer_for(autocast="bf16")
    a, b = fp32.train(start_for(fp32), examples), bf16.train(start_for(bf16), examples)
    assert all(t.dtype == torch.float32 for t in factors(b))
    diffs = [float((x - y).norm() / y.norm()) for x, y in zip(factors(a), factors(b))]
    assert max(diffs) < 0.05  # bf16 has 8 mantissa bits: close, not equal
    assert any(d > 0 for d in diffs)  # the forward really ran in bf16
    assert abs(a.train_loss - b.train_loss) < 0.05


def test_bad_gpu_options_fail_naming_the_field():
    allowed = r"choose one of \['off', 'bf16', 'fp16'\]"
    with pytest.raises(ValueError, match=r"train.autocast='fp8' is not allowed; " + allowed):
        TrainConfig(autocast="fp8")
    with pytest.raises(ValueError, match="train.gradient_checkpointing='yes' must be true or false"):
        TrainConfig(gradient_checkpointing="yes")
    with pytest.raises(ValueError, match="train.autocast='fp16' needs a CUDA device"):
        trainer_for(autocast="fp16")


def test_out_of_memory_message_names_the_share_and_the_fix():
    text = oom_message("client 3 in round 2", peak=int(9.5 * 2**30), share=0.25, total=80 * 2**30)
    assert "client 3 in round 2 ran out of GPU memory after reaching 9.50 GiB" in text
    assert "resources.gpus_per_worker=0.25 of a 80.0 GiB GPU (~20.0 GiB)" in text
    assert "train.gradient_checkpointing" in text and "train.batch_size" in text
    err = pickle.loads(pickle.dumps(GpuMemoryError(text)))  # crosses Ray's process boundary intact
    assert str(err) == text
    assert torch.cuda.OutOfMemoryError in oom_types()
