import json
import time

import pytest
import torch

from workers.models import (
    MeanPoolingClassifier,
    ModelConfig,
    head_state,
    load_model,
    sentence_transformer_pooling,
    target_module_specs,
)
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------- configs


def test_model_config_defaults_and_normalisation():
    cfg = ModelConfig()
    assert (cfg.name, cfg.target_modules, cfg.dtype, cfg.pooling) == ("minilm", None, "float32", "auto")
    # a sweep YAML gives a list: stored as a tuple (hashable, frozen)
    assert ModelConfig(target_modules=["query", "value"]).target_modules == ("query", "value")
    assert ModelConfig(dtype="bfloat16").torch_dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs, match", [
    (dict(name=""), r"model\.name=''"),
    (dict(dtype="float64"), r"model\.dtype='float64' is not allowed; choose one of \['float32'"),
    (dict(target_modules=[]), r"model\.target_modules=\[\]"),
    (dict(target_modules=["query", "query"]), r"model\.target_modules.*duplicates"),
    (dict(target_modules=["query", ""]), r"model\.target_modules"),
    (dict(pooling="max"), r"model\.pooling='max' is not allowed; choose one of \['auto', 'cls', 'mean'\]"),
    (dict(pooling=None), r"model\.pooling=None is not allowed"),
])
def test_model_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="adam"), r"train\.optimizer='adam' is not allowed; choose one of \['adamw', 'sgd'\]"),
    (dict(lr=0.0), r"train\.lr=0\.0 must be a finite number > 0"),
    (dict(local_steps=0), r"train\.local_steps=0 must be an integer >= 1"),
    (dict(local_epochs=0), r"train\.local_epochs=0"),
    (dict(batch_size=2.5), r"train\.batch_size=2\.5"),
    (dict(lora_dropout=1.0), r"train\.lora_dropout=1\.0 must be in \[0, 1\)"),
    (dict(grad_clip=-1.0), r"train\.grad_clip=-1\.0"),
    (dict(weight_decay=-0.1), r"train\.weight_decay"),
    (dict(max_new_tokens=0), r"train\.max_new_tokens"),
])
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_steps_from_epochs_override_local_steps():
    assert TrainConfig(local_steps=7).total_steps(100) == 7
    assert TrainConfig(local_steps=7, local_epochs=2, batch_size=16).total_steps(100) == 2 * 7  # ceil(100/16)=7
    assert TrainConfig(local_epochs=1, batch_size=16).total_steps(33) == 3
    assert TrainConfig().total_steps(0) == 0


# ---------------------------------------------------------------- loading


def test_tiny_llama_specs_use_fully_qualified_names_and_weight_shapes():
    loaded = load_model(ModelConfig("tiny-llama"), "causal_lm")
    specs = target_module_specs(loaded.model, ("q_proj", "v_proj"))
    names = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    assert [s.name for s in specs] == names
    # hidden 64; 4 heads of 16 -> q: (64, 64); 2 key/value heads -> v: (32, 64)
    assert [(s.d_out, s.k_in) for s in specs] == [(64, 64), (32, 64)] * 2
    assert loaded.targets == tuple(s.name for s in specs)
    assert loaded.head_names == ()


def test_ffn_targets_are_allowed():
    loaded = load_model(ModelConfig("tiny-llama", target_modules=("up_proj", "down_proj")), "causal_lm")
    shapes = {n.rsplit(".", 1)[1]: (s.d_out, s.k_in) for n, s in
              zip(loaded.targets, target_module_specs(loaded.model, ("up_proj", "down_proj")))}
    assert shapes == {"up_proj": (128, 64), "down_proj": (64, 128)}


def test_missing_target_module_lists_the_available_linear_names():
    with pytest.raises(ValueError) as err:
        load_model(ModelConfig("tiny-llama", target_modules=("q_proj", "qkv")), "causal_lm")
    message = str(err.value)
    assert "['qkv'] match no linear layer" in message
    for name in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj", "lm_head"):
        assert name in message


def test_unknown_model_id_offline_says_not_a_local_path_and_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"model\.name='no-such-org/no-such-model' is not a local path and the "
                                         r"model hub is offline"):
        load_model(ModelConfig("no-such-org/no-such-model"), "classification", num_labels=2)


def test_classification_needs_labels_and_minilm_is_encoder_only():
    with pytest.raises(ValueError, match="num_labels"):
        load_model(ModelConfig("tiny-llama"), "classification")
    with pytest.raises(ValueError, match="encoder"):
        load_model(ModelConfig("minilm"), "causal_lm")


def test_head_init_is_seeded_by_the_run_seed():
    a = head_state(load_model(ModelConfig("tiny-llama"), "classification", 3, seed=7))
    b = head_state(load_model(ModelConfig("tiny-llama"), "classification", 3, seed=7))
    c = head_state(load_model(ModelConfig("tiny-llama"), "classification", 3, seed=8))
    assert list(a) == ["score.weight"] and a["score.weight"].shape == (3, 64)
    assert torch.equal(a["score.weight"], b["score.weight"])
    assert not torch.equal(a["score.weight"], c["score.weight"])


@pytest.mark.slow
def test_minilm_loads_pretrained_with_seeded_classifier():
    a = load_model(ModelConfig("minilm"), "classification", 2, seed=3)
    b = load_model(ModelConfig("minilm"), "classification", 2, seed=3)
    assert a.family == "bert" and len(a.targets) == 12  # 6 layers x (query, value)
    assert a.targets[0] == "bert.encoder.layer.0.attention.self.query"
    assert a.head_names == ("classifier.weight", "classifier.bias")
    for k, v in head_state(a).items():
        assert torch.equal(v, head_state(b)[k])
    assert not any(p.requires_grad for p in a.model.parameters())


@pytest.mark.slow
def test_smollm2_reloads_from_the_cache_fast():
    load_model(ModelConfig("smollm2"), "causal_lm")  # builds the cache from the GGUF file if needed
    t0 = time.perf_counter()
    loaded = load_model(ModelConfig("smollm2"), "causal_lm")
    elapsed = time.perf_counter() - t0
    print(f"cached SmolLM2 reload: {elapsed:.2f} s")
    assert elapsed < 5.0, f"cached SmolLM2 reload took {elapsed:.1f} s (the GGUF path takes 15-20 s)"
    assert loaded.family == "llama" and len(loaded.targets) == 60  # 30 layers x (q_proj, v_proj)
    assert "quantization_config" not in loaded.model.config.to_dict()


# ---------------------------------------------------------------- pooling


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def test_mean_pooling_is_the_attention_mask_weighted_mean_of_the_last_hidden_states():
    loaded = load_model(ModelConfig("tiny-llama", pooling="mean"), "classification", 3, seed=5)
    model = loaded.model
    assert isinstance(model, MeanPoolingClassifier) and loaded.pooling == "mean"
    batch = _batch(loaded.tokenizer, ["a long enough sentence to pad the others", "short", "mid length"])
    mask = batch["attention_mask"]
    assert (mask == 0).any()  # the batch has padding
    with torch.no_grad():
        hidden = model.backbone(**batch).last_hidden_state  # (batch, tokens, hidden)
        expected = torch.stack([hidden[i, mask[i].bool()].mean(0) for i in range(len(mask))])
        pooled = model.pooled(**batch)
        torch.testing.assert_close(pooled, expected)
        # eval mode (no dropout): the logits are the linear head of the pooled states
        logits = model(**batch).logits
        torch.testing.assert_close(logits, model.classifier(expected))
        # extra padding does not change an example's pooled state
        alone = model.pooled(**_batch(loaded.tokenizer, ["short"]))
        torch.testing.assert_close(alone[0], pooled[1], rtol=1e-4, atol=1e-5)
    assert logits.shape == (3, 3)


def test_mean_pooling_keeps_the_backbone_weights_target_names_and_seeded_head():
    cls = load_model(ModelConfig("tiny-llama", pooling="cls"), "classification", 2, seed=7)
    mean = load_model(ModelConfig("tiny-llama", pooling="mean"), "classification", 2, seed=7)
    again = load_model(ModelConfig("tiny-llama", pooling="mean"), "classification", 2, seed=7)
    assert cls.pooling == "cls" and not isinstance(cls.model, MeanPoolingClassifier)
    assert mean.targets == cls.targets  # same module names: LoRA targets, folds and exports are unchanged
    assert mean.head_names == ("classifier.weight", "classifier.bias")
    backbone = {n: p for n, p in cls.model.named_parameters() if n.startswith("model.")}
    for name, value in mean.model.named_parameters():
        if name.startswith("model."):
            assert torch.equal(value, backbone[name]), name
    for k, v in head_state(mean).items():
        assert torch.equal(v, head_state(again)[k])
    assert head_state(mean)["classifier.weight"].abs().max() > 0
    assert not any(p.requires_grad for p in mean.model.parameters())


def test_pooling_applies_to_classification_only():
    assert load_model(ModelConfig("tiny-llama"), "causal_lm").pooling is None
    with pytest.raises(ValueError, match=r"model\.pooling='mean' applies to classification only"):
        load_model(ModelConfig("tiny-llama", pooling="mean"), "causal_lm")


def test_auto_pooling_reads_the_sentence_transformers_modules(tmp_path):
    def checkpoint(name, modes):
        folder = tmp_path / name
        (folder / "1_Pooling").mkdir(parents=True)
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
        flags = {f"pooling_mode_{m}": m in modes for m in ("cls_token", "mean_tokens", "max_tokens")}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **flags}))
        return str(folder)

    assert sentence_transformer_pooling(checkpoint("mean", {"mean_tokens"})) == "mean"
    assert sentence_transformer_pooling(checkpoint("cls", {"cls_token"})) == "cls"
    assert sentence_transformer_pooling(checkpoint("max", {"max_tokens"})) is None
    assert sentence_transformer_pooling(checkpoint("both", {"mean_tokens", "max_tokens"})) is None
    plain = tmp_path / "plain"
    plain.mkdir()
    assert sentence_transformer_pooling(str(plain)) is None  # a plain transformers checkpoint: auto = cls


def test_pooling_option_reaches_the_model_from_the_run_config(example_factory):
    from orchestrator.config import load_config
    from workers.evaluation import evaluate
    from workers.local_training import LocalTrainer

    cfg = load_config(None, ["model.name=tiny-llama", "model.pooling=mean"])
    assert cfg.model.pooling == "mean" and cfg.to_dict()["model"]["pooling"] == "mean"
    loaded = load_model(cfg.model, "classification", 2, seed=0)
    trainer = LocalTrainer(loaded, TrainConfig(lr=1e-2, local_steps=2, batch_size=4, eval_batch_size=8))
    assert isinstance(trainer.model, MeanPoolingClassifier)
    metrics = evaluate(trainer, {}, None, example_factory(10))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n_examples"] == 10


def test_mean_pooled_export_loads_with_peft_on_a_mean_pooled_base(tmp_path):
    from peft import PeftModel

    from core.wire import LowRankDelta
    from workers.export import export_adapter, write_adapter

    cfg = ModelConfig("tiny-llama", pooling="mean")
    loaded = load_model(cfg, "classification", 2, seed=1)
    gen = torch.Generator().manual_seed(0)
    shapes = {s.name: (s.d_out, s.k_in) for s in target_module_specs(loaded.model, ("q_proj", "v_proj"))}
    deltas = {m: LowRankDelta(torch.randn(d, 2, generator=gen) * 0.1, torch.randn(2, k, generator=gen) * 0.1, 1.0)
              for m, (d, k) in shapes.items()}
    head = {"classifier.weight": torch.randn(2, 64, generator=gen), "classifier.bias": torch.randn(2, generator=gen)}
    write_adapter(export_adapter(deltas, head, "classification"), tmp_path / "adapter")  # no base model
    # what a user does: the same base (load_model with the run's model.pooling), then PEFT
    base = load_model(cfg, "classification", 2, seed=1).model
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    peft_model.eval()
    reference = load_model(cfg, "classification", 2, seed=1).model
    modules, params = dict(reference.named_modules()), dict(reference.named_parameters())
    with torch.no_grad():
        for m, delta in deltas.items():
            modules[m].weight.add_(delta.dense())
        for name, value in head.items():
            params[name].copy_(value)
        batch = _batch(loaded.tokenizer, ["hello world", "a b"])
        torch.testing.assert_close(peft_model(**batch).logits, reference(**batch).logits, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_minilm_auto_pooling_is_mean_and_cls_keeps_the_bert_classifier():
    auto = load_model(ModelConfig("minilm"), "classification", 2, seed=3)
    cls = load_model(ModelConfig("minilm", pooling="cls"), "classification", 2, seed=3)
    assert auto.pooling == "mean" and isinstance(auto.model, MeanPoolingClassifier)
    assert cls.pooling == "cls" and type(cls.model).__name__ == "BertForSequenceClassification"
    assert auto.targets == cls.targets and auto.head_names == cls.head_names
    for k, v in head_state(auto).items():  # the same seeded head: only the pooling differs
        assert torch.equal(v, head_state(cls)[k])
    assert not any(n.startswith("bert.pooler") for n, _ in auto.model.named_parameters())
