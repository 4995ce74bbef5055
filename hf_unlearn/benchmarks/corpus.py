"""Text corpora to train a benchmark's tiny tokenizer on (QA prompts and every answer form)."""

from __future__ import annotations


def qa_corpus(ds) -> list[str]:
    """Text to train a tokenizer on: the prompts and every answer form of a QA dataset."""
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(ds["question"], ds["answer"])]
    for col in ("paraphrased_answer",):
        if col in ds.column_names:
            texts += list(ds[col])
    if "perturbed_answers" in ds.column_names:
        texts += [p for ps in ds["perturbed_answers"] for p in ps]
    return texts


def tokenizer_corpus(bench) -> list[str]:
    """Text to train a benchmark's tiny tokenizer on: ``full`` plus every holdout split.

    The tokenizer stands for a pretrained one, which has seen the holdout authors' text too. Trained on ``full``
    alone, holdout names split into rarer tokens and membership inference separates forget from holdout by
    tokenization instead of memorisation.
    """
    holdouts = sorted(k for k in bench if k.startswith("holdout"))
    seen: set[str] = set()
    texts = []
    for split in ["full", *holdouts]:
        for t in qa_corpus(bench[split]):
            if t not in seen:
                seen.add(t)
                texts.append(t)
    return texts
