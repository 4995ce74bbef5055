"""Protocol helpers shared by the demo, the recipes and the benchmark scripts."""

from hf_unlearn.benchmarks.fictitious_authors import build
from hf_unlearn.models import train_bpe_tokenizer
from hf_unlearn.pipeline import SETTINGS, qa_corpus, tokenizer_corpus


def test_tokenizer_corpus_covers_holdout_authors_without_duplicates():
    bench = build(n_authors=10, seed=0, qa_per_author=4)
    texts = tokenizer_corpus(bench)
    assert len(texts) == len(set(texts))
    assert set(qa_corpus(bench["holdout10"])) <= set(texts) and set(qa_corpus(bench["full"])) <= set(texts)
    # what it is for: a holdout author's name tokenizes as compactly as a trained author's name
    tok_all = train_bpe_tokenizer(texts, vocab_size=600)
    tok_full = train_bpe_tokenizer(qa_corpus(bench["full"]), vocab_size=600)
    name = bench["holdout10"][0]["question"].replace("Where was ", "").replace(" born?", "")
    assert len(tok_all(name)["input_ids"]) < len(tok_full(name)["input_ids"])


def test_settings_derive_their_splits():
    s = SETTINGS["demo"]
    assert (s.forget_split, s.retain_split, s.holdout_split) == ("forget10", "retain90", "holdout10")


def test_forward_backward_seconds_leaves_the_model_untouched(tiny_llama_trained, qa_rows):
    import torch

    from hf_unlearn.pipeline import forward_backward_seconds

    model, tok = tiny_llama_trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    assert forward_backward_seconds(model, tok, qa_rows[:5], max_length=32, batch_size=2, reps=2, train=False) > 0
    assert all(p.grad is None for p in model.parameters()) and model.training == was_training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_run_protocol_frees_each_splits_models_without_changing_a_number():
    """keep_models=False (what benchmarks/run.py uses on a real model) frees the unlearned and gold models of each
    split once it is scored; the rows must equal those of a run that keeps every model."""
    from dataclasses import replace

    from hf_unlearn.pipeline import run_protocol

    s = replace(SETTINGS["test"], name="free", n_authors=20, qa_per_author=2, ft_epochs=2, hidden_size=32)
    kw = dict(methods=["grad_ascent"], forget_splits=["forget05", "forget10"], progress=False)
    kept = run_protocol(s, keep_models=True, **kw)
    freed = run_protocol(s, keep_models=False, **kw)
    assert kept["_results_per_split"]["forget10"]["grad_ascent"].model is not None
    assert freed["_results_per_split"] == {"forget05": {}, "forget10": {}}
    assert all(g.model is None for g in freed["_context"].golds.values())
    assert freed["_context"].target is not None  # what a later study needs stays
    timing = {"unlearn_seconds", "peak_rss_mib"}
    for split in ("forget05", "forget10"):
        a, b = (
            {m: {k: v for k, v in r.items() if k not in timing} for m, r in rep["splits"][split]["rows"].items()}
            for rep in (freed, kept)
        )
        assert a == b and set(a) == {"target", "gold (retrain)", "grad_ascent"}


def test_writing_benchmark_results_keeps_the_per_item_records_of_the_live_report(script):
    run = script("benchmarks/run.py")
    report = {"splits": {"forget10": {"evaluation": {"gold": {"splits": {"forget": {"per_item": [1], "x": 2}}}}}}}
    out = run.drop_per_item(report)
    assert "per_item" not in out["splits"]["forget10"]["evaluation"]["gold"]["splits"]["forget"]
    assert report["splits"]["forget10"]["evaluation"]["gold"]["splits"]["forget"]["per_item"] == [1]
