import time

import pytest
import torch

from workers.models import ModelConfig, head_state, load_model, target_module_specs
from workers.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------- configs


def test_model_config_defaults_and_normalisation():
    cfg = ModelConfig()
    assert (cfg.name, cfg.target_modules, cfg.dtype) == ("minilm", None, "float32")
    # a sweep YAML gives a list: stored as a tuple (hashable, frozen)
    assert ModelConfig(target_modules=["query", "value"]).target_modules == ("query", "value")
    assert ModelConfig(dtype="bfloat16").torch_dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs, match", [
    (dict(name=""), r"model\.name=''"),
    (dict(dtype="float64"), r"model\.dtype='float64' is not allowed; choose one of \['float32'"),
    (dict(target_modules=[]), r"model\.target_modules=\[\]"),
    (dict(target_modules=["query", "query"]), r"model\.target_modules.*duplicates"),
    (dict(target_modules=["query", ""]), r"model\.target_modules"),
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
