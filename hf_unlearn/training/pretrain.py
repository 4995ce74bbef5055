"""A small pretrained base for CPU runs: the TOFU set-up (pretrained model, then a fine-tune on the benchmark) in
miniature.

LoRA (and S3T's LoRA stages) cannot teach a *randomly initialised* tiny model anything: its frozen random head and
embeddings cap how far an adapter moves the logits (shared/BENCHMARK.md, last section). :func:`pretrained_tiny_lm`
therefore first pretrains the tiny model on text of the same kind about OTHER people: the QA of a fictitious-authors
benchmark built with another seed, minus every person of the benchmark that will follow (its training AND holdout
authors), plus the general world-fact and real-author QA. The BPE tokenizer is trained on that pretraining text
only, so it carries no word that only the forget set has.

The result is cached on disk under ``$HF_UNLEARN_CACHE`` (default ``~/.cache/hf_unlearn``) in ``pretrained/<key>``,
``key`` a hash of the whole recipe and of the pretraining text: repeated runs and tests load it in well under a
second. The folder is written beside its final place and renamed into it, so a reader never sees half a model,
and two processes that build it at once both succeed (the second rename loses and its copy is dropped).

Example:
    >>> from hf_unlearn.training.pretrain import pretrained_tiny_lm  # doctest: +SKIP
    >>> model, tok = pretrained_tiny_lm("llama", exclude_benchmark=(20, 0))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

logger = logging.getLogger("hf_unlearn")

RECIPE_VERSION = 1  # bump when the pretraining recipe changes in a way the hashed fields do not capture


def cache_root() -> Path:
    """Where hf_unlearn caches built artefacts: ``$HF_UNLEARN_CACHE`` or ``~/.cache/hf_unlearn``."""
    return Path(os.environ.get("HF_UNLEARN_CACHE") or Path.home() / ".cache" / "hf_unlearn").expanduser()


def benchmark_people(n_authors: int, seed: int) -> set[str]:
    """Every person of ``build(n_authors, seed)``: its training authors AND its holdout authors.

    Example:
        >>> len(benchmark_people(10, 0))  # 10 authors + 1 holdout author
        11
    """
    from hf_unlearn.benchmarks.fictitious_authors import author_profiles

    return {p["name"] for p in author_profiles(n_authors, seed)}


def pretraining_corpus(
    exclude_names: Iterable[str] = (),
    n_authors: int = 40,
    seed: int = 123,
    qa_per_author: int = 20,
) -> Any:
    """The pretraining text: QA about other fictitious people plus general world-fact and real-author QA.

    Args:
        exclude_names: people that must not appear (the benchmark that follows: :func:`benchmark_people`).
        n_authors: authors of the generated corpus (its holdout authors are used too) before exclusion.
        seed: its generator seed (use one other than the benchmark's).
        qa_per_author: QA items per author (1..20).

    Returns:
        A ``datasets.Dataset`` with ``uid`` (prefixed ``pretrain-``), ``author_id``, ``question``, ``answer``; no
        row mentions an excluded name.

    Raises:
        ValueError: when every generated author is excluded.

    Example:
        >>> ds = pretraining_corpus(exclude_names=benchmark_people(20, 0), n_authors=10, seed=123, qa_per_author=2)
        >>> ds[0]["uid"].startswith("pretrain-")
        True
    """
    from datasets import Dataset

    from hf_unlearn.benchmarks.fictitious_authors import author_profiles, build

    excluded = set(exclude_names)
    names = {p["author_id"]: p["name"] for p in author_profiles(n_authors, seed)}
    keep = {a for a, name in names.items() if name not in excluded}
    if not keep:
        raise ValueError(
            f"every author of the pretraining corpus (n_authors={n_authors}, seed={seed}) is excluded; "
            "use another seed or more authors"
        )
    bench = build(n_authors=n_authors, seed=seed, qa_per_author=qa_per_author)
    holdout = max((k for k in bench if k.startswith("holdout")), key=lambda k: len(bench[k]))
    rows: dict[str, list[Any]] = {"uid": [], "author_id": [], "question": [], "answer": []}
    for split in ("full", holdout):
        for r in bench[split]:
            if r["author_id"] in names and r["author_id"] not in keep:
                continue
            rows["uid"].append(f"pretrain-s{seed}-{r['uid']}")
            rows["author_id"].append(r["author_id"])
            rows["question"].append(r["question"])
            rows["answer"].append(r["answer"])
    return Dataset.from_dict(rows)


def _corpus_texts(ds: Any) -> list[str]:
    return [f"Question: {q}\nAnswer: {a}" for q, a in zip(ds["question"], ds["answer"])]


def pretrained_tiny_lm(
    arch: str = "llama",
    *,
    exclude_benchmark: tuple[int, int] | None = None,
    exclude_names: Iterable[str] = (),
    corpus_authors: int = 40,
    corpus_seed: int = 123,
    corpus_qa_per_author: int = 20,
    vocab_size: int = 768,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    epochs: float = 15,
    learning_rate: float = 5e-3,
    batch_size: int = 16,
    max_length: int = 96,
    seed: int = 0,
    cache: bool | str | os.PathLike = True,
    progress: bool = False,
) -> tuple[nn.Module, Any]:
    """A tiny causal LM pretrained on generic QA about other people (cached on disk) and its tokenizer.

    Use it as the base of a benchmark run: fine-tune the target on ``build(n_authors, seed)["full"]`` from it (full
    or LoRA), as TOFU fine-tunes a pretrained model. Pass the benchmark as ``exclude_benchmark=(n_authors, seed)``
    so the pretraining text shares no person with it (training or holdout authors).

    Args:
        arch: a :func:`hf_unlearn.models.tiny_causal_lm` family (``"llama"``, ``"gpt2"``, ...).
        exclude_benchmark: ``(n_authors, seed)`` of the benchmark whose people must not appear.
        exclude_names: more names to leave out.
        corpus_authors, corpus_seed, corpus_qa_per_author: the generated corpus (:func:`pretraining_corpus`).
        vocab_size: BPE vocabulary, trained on the pretraining text only.
        hidden_size, num_layers, num_heads: the architecture.
        epochs, learning_rate, batch_size, max_length: the pretraining recipe (a full fine-tune from random init).
        seed: initialisation and data-order seed.
        cache: True (the default cache folder), a folder, or False (always build, never write).
        progress: show the pretraining progress bar.

    Returns:
        ``(model, tokenizer)``: the model in train mode, fp32, on CPU.

    Example:
        >>> model, tok = pretrained_tiny_lm(exclude_benchmark=(20, 0), epochs=1, corpus_authors=4)  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_unlearn.models import tiny_causal_lm, train_bpe_tokenizer
    from hf_unlearn.training.finetune import finetune

    excluded = set(exclude_names)
    if exclude_benchmark is not None:
        if not (isinstance(exclude_benchmark, (tuple, list)) and len(exclude_benchmark) == 2):
            raise ValueError(f"exclude_benchmark must be (n_authors, seed), got {exclude_benchmark!r}")
        excluded |= benchmark_people(*exclude_benchmark)
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0, got {epochs!r}")
    corpus = pretraining_corpus(excluded, corpus_authors, corpus_seed, corpus_qa_per_author)
    texts = _corpus_texts(corpus)
    recipe = dict(
        version=RECIPE_VERSION,
        arch=arch,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        epochs=float(epochs),
        learning_rate=float(learning_rate),
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        corpus_sha256=hashlib.sha256("\x00".join(texts).encode()).hexdigest(),
    )
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    folder = None
    if cache is not False:
        root = cache_root() if cache is True else Path(cache).expanduser()
        folder = root / "pretrained" / f"tiny-{arch}-{num_layers}x{hidden_size}-{key}"
        if (folder / "config.json").exists():
            model = AutoModelForCausalLM.from_pretrained(str(folder))
            return model.train(), _pretraining_only(AutoTokenizer.from_pretrained(str(folder)))
    logger.info("pretraining a tiny %s base on %d generic QA items (%s epochs)", arch, len(corpus), epochs)
    tok = _pretraining_only(train_bpe_tokenizer(texts, vocab_size=vocab_size))
    model, tok = tiny_causal_lm(
        arch, tokenizer=tok, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, seed=seed
    )
    model = finetune(
        model,
        tok,
        corpus,
        num_epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        disable_tqdm=not progress,
    ).model
    model.config.name_or_path = f"hf_unlearn/pretrained-tiny-{arch}-{num_layers}x{hidden_size}-{key}"
    if folder is not None:
        _save_atomically(model, tok, folder, recipe)
    return model.train(), tok


def _pretraining_only(tok: Any) -> Any:
    """Mark ``tok`` as trained on the pretraining text only: it saw no benchmark person, so saving it with an
    unlearned model leaks no forget-set word and ``save_unlearned`` need not warn (docs/privacy.md)."""
    from hf_unlearn.models import LOCAL_TOKENIZER_MARK

    tok.init_kwargs.pop(LOCAL_TOKENIZER_MARK, None)
    tok.init_kwargs["hf_unlearn_tokenizer_text"] = "pretraining text only (no person of the benchmark that follows)"
    return tok


def _save_atomically(model: nn.Module, tok: Any, folder: Path, recipe: dict[str, Any]) -> None:
    """Write into a temporary folder beside ``folder``, then rename it into place; if another process got there
    first, keep theirs (same recipe, same bytes) and drop ours."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "hf_unlearn_recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
        try:
            os.rename(tmp, folder)  # atomic on POSIX; fails when ``folder`` already exists (a concurrent build)
        except OSError:
            if not (folder / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
