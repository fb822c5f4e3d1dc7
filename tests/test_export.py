"""Export from the factors alone (no base model) loads in PEFT exactly like the export through PEFT on a base."""

import json

import pytest
import torch
from safetensors.torch import load

from core.wire import DenseDelta, LowRankDelta
from workers.export import export_adapter, export_adapter_peft, write_adapter
from workers.models import ModelConfig, head_state, load_model

pytestmark = pytest.mark.usefixtures("single_thread")


def deltas_for(loaded, seed, ranks=(2, 3), scale=0.5, dense_every=0):
    """Non-zero B, mixed ranks per module, scale != 1; every ``dense_every``-th module dense (FLoRA)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(loaded.model.named_parameters())
    out = {}
    for i, m in enumerate(loaded.targets):
        d, k = params[f"{m}.weight"].shape
        r = ranks[i % len(ranks)]
        B, A = torch.randn(d, r, generator=gen) * 0.2, torch.randn(r, k, generator=gen) * 0.2
        out[m] = DenseDelta(B @ A) if dense_every and i % dense_every == 0 else LowRankDelta(B, A, scale)
    return out


def peft_logits(cfg, task, num_labels, files, tmp_path, name, batch):
    from peft import PeftModel

    write_adapter(files, tmp_path / name)
    base = load_model(cfg, task, num_labels, seed=1).model
    model = PeftModel.from_pretrained(base, str(tmp_path / name))
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


def reference_logits(cfg, task, num_labels, deltas, head, batch):
    model = load_model(cfg, task, num_labels, seed=1).model
    modules, params = dict(model.named_modules()), dict(model.named_parameters())
    with torch.no_grad():
        for m, delta in deltas.items():
            modules[m].weight.add_(delta.dense().to(torch.float32))
        for name, value in (head or {}).items():
            params[name].copy_(value)
        return model(**batch).logits.float()


CASES = [("tiny-llama", "classification", "cls", 0), ("tiny-llama", "classification", "mean", 2),
         ("tiny-llama", "causal_lm", "auto", 3)]


@pytest.mark.parametrize("name,task,pooling,dense_every", CASES)
def test_factor_export_loads_like_the_peft_export(name, task, pooling, dense_every, tmp_path):
    # Prepare: a base whose seeded head differs from the exported head (seed 1 vs the head below)
    cfg = ModelConfig(name, pooling=pooling)
    num_labels = 2 if task == "classification" else None
    loaded = load_model(cfg, task, num_labels, seed=1)
    deltas = deltas_for(loaded, seed=4, dense_every=dense_every)
    head = {k: torch.randn_like(v) for k, v in head_state(loaded).items()} or None
    enc = loaded.tokenizer(["hello world film", "a b"], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # Execute: today's export through PEFT on a loaded base, and the export from the factors alone
    old = export_adapter_peft(load_model(cfg, task, num_labels, seed=1), deltas, head)
    new = export_adapter(deltas, head, task)

    # Assert: same tensors under the same names, same config, same logits after PeftModel.from_pretrained
    assert set(new) == {"adapter_config.json", "adapter_model.safetensors"}
    old_t, new_t = load(old["adapter_model.safetensors"]), load(new["adapter_model.safetensors"])
    assert set(old_t) == set(new_t)
    for key, value in old_t.items():
        assert torch.equal(new_t[key], value.to(torch.float32)), key
    old_cfg, new_cfg = json.loads(old["adapter_config.json"]), json.loads(new["adapter_config.json"])
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "target_modules", "task_type"):
        assert (sorted(new_cfg[key]) if key == "target_modules" else new_cfg[key]) == \
            (sorted(old_cfg[key]) if key == "target_modules" else old_cfg[key]), key
    old_logits = peft_logits(cfg, task, num_labels, old, tmp_path, "old", batch)
    new_logits = peft_logits(cfg, task, num_labels, new, tmp_path, "new", batch)
    assert torch.equal(new_logits, old_logits)
    ref = reference_logits(cfg, task, num_labels, deltas, head, batch)
    torch.testing.assert_close(new_logits, ref, rtol=1e-4, atol=1e-4)
    assert (ref - reference_logits(cfg, task, num_labels, {}, None, batch)).abs().max() > 1e-3  # deltas matter


@pytest.mark.slow
def test_factor_export_loads_like_the_peft_export_minilm(tmp_path):
    test_factor_export_loads_like_the_peft_export("minilm", "classification", "auto", 0, tmp_path)


def test_export_rejects_an_unknown_task():
    with pytest.raises(ValueError, match="task='regression'"):
        export_adapter({"q": LowRankDelta(torch.ones(2, 1), torch.ones(1, 2))}, None, "regression")
