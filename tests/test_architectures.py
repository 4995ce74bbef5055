"""Every registered method on every common causal-LM family (issue 14, item 5).

One tiny random model per family (hidden 32, 2 blocks, shared tokenizer), fine-tuned for a few steps as the target
(with every recorder the methods need) and as the gold model, then each method from ``hf_unlearn.list_methods()``
runs one short step through its benchmark runner (``hf_unlearn.pipeline``), which supplies what it needs (S3T's
trained system and uid request, the embedding_ga / partial_amnesiac recordings, RUM's learning events). A method
added later is picked up automatically. Each case checks that the method changed the model's predictions on the
forget set (a method that silently does nothing fails) and that they stay finite.
"""

import dataclasses
import math

import pytest
import torch
from datasets import DatasetDict

import hf_unlearn
from hf_unlearn.benchmarks.fictitious_authors import build
from hf_unlearn.models import decoder_layers, tiny_causal_lm, train_bpe_tokenizer
from hf_unlearn.pipeline import Setting, builtin_runners, prepare, qa_corpus
from hf_unlearn.registry import get_method

# (family, tie_word_embeddings): None = the family's own choice. Tied and untied both appear.
FAMILIES = [
    ("llama", None),
    ("llama", True),
    ("gpt2", None),
    ("gpt2", False),
    ("mistral", None),
    ("qwen2", None),
    ("qwen3", None),
    ("gemma2", None),
    ("gemma3_text", None),
    ("phi3", None),
    ("phi", None),
    ("gpt_neox", None),
    ("opt", None),
    ("falcon", None),
    ("bloom", None),
]
METHODS = hf_unlearn.list_methods()


def _family_id(fam: tuple[str, bool | None]) -> str:
    name, tie = fam
    return name if tie is None else f"{name}-{'tied' if tie else 'untied'}"


@pytest.fixture(scope="module")
def bench():
    """3 authors x 3 QA (``full`` without the general rows); forget10 = the last author (RUM groups need 3)."""
    dd = build(n_authors=3, seed=0, qa_per_author=3)
    full = dd["full"].filter(lambda r: r["author_id"] not in ("world", "real"))
    return DatasetDict(
        full=full, forget10=full.select(range(6, 9)), retain90=full.select(range(6)), holdout10=dd["holdout10"]
    )


@pytest.fixture(scope="module")
def tokenizer(bench):
    return train_bpe_tokenizer(qa_corpus(bench["full"]) + qa_corpus(bench["holdout10"]), vocab_size=320)


def _short_overrides() -> dict[str, dict]:
    """One optimizer step, batch 2, for every method that trains; S3T: 2 slices (one per block)."""
    out = {}
    for m in METHODS:
        fields = {f.name for f in dataclasses.fields(get_method(m).config_cls)}
        o = {k: v for k, v in {"max_steps": 1, "batch_size": 2, "num_epochs": 1}.items() if k in fields}
        if m == "s3t":
            o.update(n_slices=2, lora={"r": 4, "lora_alpha": 8})
        if m == "ssd":  # 3 forget examples against 9: the default alpha=10 selects nothing on data this small
            o.update(alpha=1.0)
        out[m] = o
    return out


_CONTEXTS: dict[str, object] = {}


@pytest.fixture
def family_ctx(request, bench, tokenizer):
    """The prepared protocol context of one family (built once, for all of its cases)."""
    fam = request.param
    key = _family_id(fam)
    if key not in _CONTEXTS:
        model, tok = tiny_causal_lm(
            fam[0], tokenizer=tokenizer, hidden_size=32, num_layers=2, num_heads=4, tie_word_embeddings=fam[1]
        )
        setting = Setting(
            f"arch-{key}",
            n_authors=3,
            qa_per_author=3,
            ft_epochs=4,
            ft_lr=1e-2,
            ft_batch_size=2,
            max_length=40,
            method_overrides=_short_overrides(),
        )
        _CONTEXTS[key] = prepare(setting, METHODS, progress=False, base=(model, tok), bench=bench)
    return _CONTEXTS[key]


def _forget_logits(model, ctx) -> torch.Tensor:
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(ctx.forget["question"], ctx.forget["answer"])]
    batch = ctx.tokenizer(texts, return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


@pytest.mark.parametrize("family_ctx", FAMILIES, ids=_family_id, indirect=True)
def test_family_is_what_was_asked(family_ctx):
    ctx = family_ctx
    inner = ctx.base_model
    name = ctx.setting.name.removeprefix("arch-")
    assert inner.config.model_type == name.split("-")[0]
    assert len(decoder_layers(inner)) == 2
    tied = inner.get_output_embeddings().weight is inner.get_input_embeddings().weight
    if name.endswith("-tied"):
        assert tied
    if name.endswith("-untied"):
        assert not tied


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family_ctx", FAMILIES, ids=_family_id, indirect=True)
def test_method_runs_and_changes_the_model(family_ctx, method):
    ctx = family_ctx
    runner = builtin_runners()[method]
    res = runner.run(ctx)
    before = _forget_logits(ctx.target, ctx)
    after = _forget_logits(res.model, ctx)
    assert after.shape == before.shape
    assert torch.isfinite(after).all(), f"{method} on {ctx.setting.name}: non-finite logits"
    delta = (after - before).abs().max().item()
    # a method may decline to act, but only saying why (e.g. embedding_ga: the forget set is already at its target)
    if delta == 0:
        # the reason is the method's own (embedding_ga) or calibration's, which may undo a first step that was
        # not needed (the forget set already at the holdout level) and says so
        reason = res.details.get("stop_reason") or (res.details.get("calibration") or {}).get("stop_reason")
        if not reason:
            groups = [g.get("calibration") or {} for g in res.details.get("groups", []) if isinstance(g, dict)]
            reason = any(g.get("stop_reason") for g in groups)
        assert reason, f"{method} on {ctx.setting.name} silently left the model unchanged"
    assert math.isfinite(delta)


def test_unknown_family_names_the_closest(tokenizer):
    with pytest.raises(ValueError, match="did you mean 'qwen2'"):
        tiny_causal_lm("qwen22", tokenizer=tokenizer)
