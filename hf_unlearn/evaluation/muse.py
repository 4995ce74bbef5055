"""MUSE evaluation on text corpora: VerbMem, KnowMem and PrivLeak, computed as swj0419/muse_bench computes them.

* **VerbMem** (``metrics/verbmem.py``): each prompt (the MUSE ``verbmem`` subset, or the first ``prompt_tokens``
  tokens of each forget text) is encoded with special tokens and continued greedily for 128 new tokens; the ground
  truth is cut to its first 128 tokens (encoded with special tokens, as MUSE does); the score is ROUGE-L F1 without
  stemming, reported as ``mean * 100``.
* **KnowMem** (``metrics/knowmem.py``): few-shot QA. The prompt is the in-context examples as
  ``"Question: {q}\\nAnswer: {a}\\n\\n"`` followed by ``"Question: {q}\\nAnswer: "``; 32 greedy new tokens, cut at
  ``"\\n\\n"``, ``"\\nQuestion"`` and ``"Question:"``; ROUGE-L F1 without stemming, ``mean * 100``.
* **PrivLeak** (``metrics/privleak.py``, ``eval.py``): each text is scored whole (every token after the first, no
  EOS added), by LOSS, ZLib (on the raw text), Min-K% (k = 0.4, MUSE's ``Min-40%``) and Min-K%++; the AUC of forget
  (label 0) against holdout (label 1) is turned into PrivLeak with the gold (retrained) model's AUC:
  :func:`hf_unlearn.evaluation.metrics.privleak`. MUSE's headline PrivLeak is the Min-K% one.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> forget = ["the red fox jumps over the lazy dog again and again", "a blue bird sings in the old tree today"]
    >>> holdout = ["green frogs sit on wet stones by the quiet pond", "the small cat naps under the warm sun now"]
    >>> model, tok = tiny_causal_lm("llama", texts=forget + holdout, num_layers=1, vocab_size=300)
    >>> res = evaluate_muse(model, tok, forget_texts=forget, holdout_texts=holdout, verbmem_prompt_tokens=4,
    ...                     verbmem_max_new_tokens=4)
    >>> 0.0 <= res["verbmem_f"] <= 100.0 and res["privleak"] is None and res["meta"]["definitions"]
    'muse'
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hf_unlearn.evaluation import metrics as M
from hf_unlearn.evaluation.runner import (
    _accelerator,
    feature_stats,
    generate_continuations,
    load_result,
)

__all__ = [
    "MUSE_ATTACKS",
    "text_features",
    "text_stats",
    "verbmem_items",
    "run_verbmem",
    "knowmem_prompt",
    "run_knowmem",
    "evaluate_muse",
]

MUSE_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
MUSE_REPORT_VERSION = 1


# ------------------------------------------------------------------------------------------------ inputs
def _uid(text: str) -> str:
    return "muse-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _column(data: Any, column: str, what: str) -> tuple[list[str], list[str]]:
    """``(uids, values)`` of a text column from a Dataset / list of dicts / list of strings."""
    if data is None:
        raise ValueError(f"{what} is required")
    if isinstance(data, (str, bytes)):
        raise ValueError(f"{what} must be a list of texts or a Dataset, not a single string")
    names = getattr(data, "column_names", None)
    if names is not None:
        if column not in names:
            raise KeyError(f"column {column!r} missing from {what}; it has {names}")
        values = [str(v) for v in data[column]]
        uids = [str(u) for u in data["uid"]] if "uid" in names else None
    else:
        rows = list(data)
        if rows and isinstance(rows[0], Mapping):
            if column not in rows[0]:
                raise KeyError(f"column {column!r} missing from {what}; rows have {sorted(rows[0])}")
            values = [str(r[column]) for r in rows]
            uids = [str(r["uid"]) for r in rows] if "uid" in rows[0] else None
        else:
            values = [str(r) for r in rows]
            uids = None
    if not values:
        raise ValueError(f"{what} is empty")
    if uids is None:
        uids, seen = [], {}
        for v in values:
            base = _uid(v)
            seen[base] = seen.get(base, 0) + 1
            uids.append(base if seen[base] == 1 else f"{base}-{seen[base] - 1}")
    if len(set(uids)) != len(uids):
        raise ValueError(f"{what} has duplicate uids")
    return uids, values


def text_features(tokenizer: Any, texts: Sequence[str], max_length: int | None = None) -> list[dict[str, list[int]]]:
    """Encode whole texts as MUSE's ``compute_ppl`` does: special tokens added, every token after the first scored.

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: the texts.
        max_length: keep at most this many tokens (None: no truncation, as in MUSE).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> _, tok = tiny_causal_lm("gpt2", texts=["hello world"] * 4, num_layers=1, vocab_size=270)
        >>> f = text_features(tok, ["hello world"])[0]
        >>> f["labels"][0], f["labels"][1:] == f["input_ids"][1:]
        (-100, True)
    """
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        if max_length is not None:
            ids = ids[:max_length]
        if len(ids) < 2:
            raise ValueError(f"text {text[:40]!r} has fewer than 2 tokens: nothing to score")
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [M.IGNORE_INDEX] + ids[1:]})
    return out


def text_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    batch_size: int = 8,
    accelerator: Any = None,
) -> dict[str, np.ndarray]:
    """Per-text statistics (``avg_nll``, token log-probs, Min-K%++ ``mu``/``sigma``...) of whole texts, batched.

    See :func:`hf_unlearn.evaluation.runner.feature_stats` for the returned arrays.
    """
    feats = text_features(tokenizer, texts, max_length)
    return feature_stats(model, tokenizer, feats, token_stats=True, batch_size=batch_size, accelerator=accelerator)


# ------------------------------------------------------------------------------------------------ VerbMem
def verbmem_items(tokenizer: Any, texts: Sequence[str], prompt_tokens: int = 32) -> tuple[list[int], list[dict]]:
    """Prompt / ground-truth pairs from a forget corpus: the first ``prompt_tokens`` tokens of each text (decoded)
    are the prompt, the rest of the text the ground truth. Texts with nothing after the prompt are skipped.

    Returns:
        ``(kept indices, [{"prompt", "gt"}])``.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> _, tok = tiny_causal_lm("gpt2", texts=["one two three four"] * 4, num_layers=1, vocab_size=270)
        >>> idx, items = verbmem_items(tok, ["one two three four", "one"], prompt_tokens=2)
        >>> idx
        [0]
    """
    if prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be >= 1, got {prompt_tokens}")
    kept, items = [], []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= prompt_tokens:
            continue
        kept.append(i)
        items.append({"prompt": tokenizer.decode(ids[:prompt_tokens]), "gt": tokenizer.decode(ids[prompt_tokens:])})
    return kept, items


def run_verbmem(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    gts: Sequence[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    accelerator: Any = None,
) -> dict[str, Any]:
    """MUSE VerbMem on prompt / ground-truth pairs: ``{"rougeL_f1" [n], "generation", "gt"}`` (gt cut as MUSE).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("llama", texts=["once upon a time there"] * 4, num_layers=1, vocab_size=280)
        >>> out = run_verbmem(model, tok, ["once upon"], ["a time there"], max_new_tokens=3)
        >>> out["rougeL_f1"].shape
        (1,)
    """
    if len(prompts) != len(gts):
        raise ValueError(f"got {len(prompts)} prompts but {len(gts)} ground truths")
    prompt_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    outputs = generate_continuations(
        model,
        tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        clean_up_tokenization_spaces=True,
        accelerator=accelerator,
    )
    gt_short = [
        tokenizer.decode(
            tokenizer(gt, add_special_tokens=True)["input_ids"][:max_new_tokens],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=True,
        )
        for gt in gts
    ]
    return {"rougeL_f1": M.verbmem(outputs, gt_short), "generation": outputs, "gt": gt_short}


# ------------------------------------------------------------------------------------------------ KnowMem
def knowmem_prompt(question: str, icl_questions: Sequence[str] = (), icl_answers: Sequence[str] = ()) -> str:
    """MUSE's few-shot prompt: the in-context examples, then ``"Question: {question}\\nAnswer: "``.

    Example:
        >>> knowmem_prompt("Q2?", ["Q1?"], ["A1"])
        'Question: Q1?\\nAnswer: A1\\n\\nQuestion: Q2?\\nAnswer: '
    """
    if len(icl_questions) != len(icl_answers):
        raise ValueError(f"got {len(icl_questions)} in-context questions but {len(icl_answers)} answers")
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in zip(icl_questions, icl_answers))
    return shots + f"Question: {question}\nAnswer: "


def run_knowmem(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    icl_questions: Sequence[str] = (),
    icl_answers: Sequence[str] = (),
    max_new_tokens: int = 32,
    batch_size: int = 8,
    accelerator: Any = None,
) -> dict[str, Any]:
    """MUSE KnowMem on QA pairs: ``{"rougeL_f1" [n], "generation"}`` (generations cut at MUSE's stop strings).

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q?\\nAnswer: A"] * 4, num_layers=1, vocab_size=280)
        >>> run_knowmem(model, tok, ["Q?"], ["A"], max_new_tokens=2)["rougeL_f1"].shape
        (1,)
    """
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    prompt_ids = [
        tokenizer(knowmem_prompt(q, icl_questions, icl_answers), add_special_tokens=True)["input_ids"]
        for q in questions
    ]
    outputs = generate_continuations(
        model,
        tokenizer,
        prompt_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        clean_up_tokenization_spaces=True,
        accelerator=accelerator,
    )
    return {
        "rougeL_f1": M.knowmem(outputs, answers),
        "generation": [M.cut_at_stop_strings(o, M.MUSE_KNOWMEM_STOP) for o in outputs],
    }


# ------------------------------------------------------------------------------------------------ the report
def _mia_scores(stats: dict[str, np.ndarray], texts: Sequence[str], k: float) -> dict[str, np.ndarray]:
    mask = stats["mask"]
    return {
        "loss": M.loss_scores(stats["avg_nll"]),
        "zlib": M.zlib_scores(stats["avg_nll"], texts),  # MUSE compresses the raw text
        "min_k": M.min_k_scores(stats["token_logprob"], k=k, mask=mask, definition="paper"),
        "min_k_plus_plus": M.min_k_plus_plus_scores(
            stats["token_logprob"], stats["mu"], stats["sigma"], k, mask, definition="paper"
        ),
    }


def evaluate_muse(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    forget_texts: Any,
    holdout_texts: Any,
    verbmem: Any = None,
    knowmem_forget: Any = None,
    knowmem_retain: Any = None,
    knowmem_forget_icl: Any = None,
    knowmem_retain_icl: Any = None,
    reference: Mapping[str, Any] | str | os.PathLike | None = None,
    verbmem_prompt_tokens: int = 32,
    verbmem_max_new_tokens: int = 128,
    knowmem_max_new_tokens: int = 32,
    mia_k: float = 0.4,
    max_length: int | None = None,
    batch_size: int = 8,
    name: str | None = None,
    accelerator: Any = None,
) -> dict[str, Any]:
    """The MUSE report of ``model``: VerbMem and KnowMem (``x 100``), MIA AUCs on forget vs holdout texts, PrivLeak.

    Args:
        model: the model to evaluate (target, retrained gold model, or an unlearned model).
        tokenizer: its tokenizer.
        forget_texts: the forget corpus: a list of strings, a Dataset with a ``text`` column (e.g.
            ``load_muse(..., subset="privleak", split="forget")``) or a list of ``{"text": ...}`` rows.
        holdout_texts: texts never trained on, same forms.
        verbmem: prompt / ground-truth pairs (MUSE's ``verbmem`` subset: ``prompt``, ``gt`` columns). None: built
            from ``forget_texts`` with the first ``verbmem_prompt_tokens`` tokens of each text as the prompt.
        knowmem_forget: QA pairs about the forget corpus (``question``, ``answer``); None skips KnowMem forget.
        knowmem_retain: QA pairs about retained knowledge; None skips KnowMem retain.
        knowmem_forget_icl: in-context examples for the forget QA (MUSE's ``forget_qa_icl``); None: zero-shot.
        knowmem_retain_icl: in-context examples for the retain QA.
        reference: the gold (retrained) model's ``evaluate_muse`` result (dict or JSON path): its AUCs turn into
            PrivLeak. None: PrivLeak is None (said so in ``notes``).
        verbmem_prompt_tokens: prompt length when VerbMem items are built from the forget texts.
        verbmem_max_new_tokens: VerbMem generation budget (MUSE 128).
        knowmem_max_new_tokens: KnowMem generation budget (MUSE 32).
        mia_k: k of Min-K% / Min-K%++ (MUSE's PrivLeak uses Min-40%).
        max_length: truncate scored texts to this many tokens (None: whole texts, as MUSE).
        batch_size: sequences per forward / generate call (per process).
        name: a label for the report.
        accelerator: an ``accelerate.Accelerator`` (created when None).

    Returns:
        ``{"name", "benchmark": "muse", "verbmem_f", "knowmem_f", "knowmem_r", "privleak", "mia": {attack: {"auc",
        "privleak"}}, "splits": {role: {"aggregate", "per_item"}}, "cost", "meta", "notes"}``. ``verbmem_f`` and
        ``knowmem_f``: lower is better after unlearning (ideal: the gold model's value); ``knowmem_r``: higher is
        better; ``privleak``: 0 is ideal.
    """
    acc = _accelerator(accelerator)
    ref = load_result(reference) if reference is not None else None
    f_uids, f_texts = _column(forget_texts, "text", "forget_texts")
    h_uids, h_texts = _column(holdout_texts, "text", "holdout_texts")
    notes: list[str] = []
    splits: dict[str, Any] = {}
    t0 = time.perf_counter()
    gen = dict(batch_size=batch_size, accelerator=acc)

    # VerbMem
    if verbmem is None:
        kept, items = verbmem_items(tokenizer, f_texts, verbmem_prompt_tokens)
        if not items:
            raise ValueError(f"no forget text is longer than verbmem_prompt_tokens={verbmem_prompt_tokens} tokens")
        v_uids = [f_uids[i] for i in kept]
        prompts, gts = [it["prompt"] for it in items], [it["gt"] for it in items]
        if len(kept) < len(f_texts):
            notes.append(f"VerbMem: {len(f_texts) - len(kept)} forget texts too short for a prompt were skipped")
        verbmem_source = f"forget_texts (first {verbmem_prompt_tokens} tokens as prompt)"
    else:
        v_uids, prompts = _column(verbmem, "prompt", "verbmem")
        _, gts = _column(verbmem, "gt", "verbmem")
        verbmem_source = "verbmem pairs"
    vm = run_verbmem(model, tokenizer, prompts, gts, max_new_tokens=verbmem_max_new_tokens, **gen)
    splits["verbmem"] = {
        "aggregate": {"rougeL_f1": float(vm["rougeL_f1"].mean()), "n_items": len(v_uids)},
        "per_item": {
            u: {"rougeL_f1": float(s), "generation": g} for u, s, g in zip(v_uids, vm["rougeL_f1"], vm["generation"])
        },
    }
    out: dict[str, Any] = {"verbmem_f": float(vm["rougeL_f1"].mean() * 100)}

    # KnowMem
    for role, qa, icl in (
        ("forget", knowmem_forget, knowmem_forget_icl),
        ("retain", knowmem_retain, knowmem_retain_icl),
    ):
        key = f"knowmem_{role[0]}"
        if qa is None:
            out[key] = None
            notes.append(f"KnowMem {role}: no QA pairs given, skipped")
            continue
        q_uids, questions = _column(qa, "question", f"knowmem_{role}")
        _, answers = _column(qa, "answer", f"knowmem_{role}")
        icl_q = _column(icl, "question", f"knowmem_{role}_icl")[1] if icl is not None else []
        icl_a = _column(icl, "answer", f"knowmem_{role}_icl")[1] if icl is not None else []
        km = run_knowmem(
            model,
            tokenizer,
            questions,
            answers,
            icl_questions=icl_q,
            icl_answers=icl_a,
            max_new_tokens=knowmem_max_new_tokens,
            **gen,
        )
        splits[f"knowmem_{role}"] = {
            "aggregate": {"rougeL_f1": float(km["rougeL_f1"].mean()), "n_items": len(q_uids), "n_shots": len(icl_q)},
            "per_item": {
                u: {"rougeL_f1": float(s), "generation": g}
                for u, s, g in zip(q_uids, km["rougeL_f1"], km["generation"])
            },
        }
        out[key] = float(km["rougeL_f1"].mean() * 100)

    # PrivLeak: forget (label 0) vs holdout (label 1) texts
    scores = {}
    for role, uids, texts in (("forget", f_uids, f_texts), ("holdout", h_uids, h_texts)):
        st = text_stats(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, accelerator=acc)
        sc = _mia_scores(st, texts, mia_k)
        scores[role] = sc
        per = {u: {"avg_nll": float(st["avg_nll"][i]), "n_tokens": int(st["n_tokens"][i])} for i, u in enumerate(uids)}
        for attack, vals in sc.items():
            for u, v in zip(uids, vals):
                per[u][f"mia_{attack}"] = float(v)
        splits[role] = {
            "aggregate": {"n_items": len(uids), "perplexity": M.perplexity(st["avg_nll"], st["n_tokens"])},
            "per_item": per,
        }
    mia: dict[str, dict[str, Any]] = {}
    for attack in MUSE_ATTACKS:
        auc = M.mia_auc(scores["forget"][attack], scores["holdout"][attack])
        ref_auc = (ref or {}).get("mia", {}).get(attack, {}).get("auc")
        mia[attack] = {"auc": auc, "privleak": M.privleak(auc, ref_auc) if ref_auc is not None else None}
    if ref is None:
        notes.append("PrivLeak needs the gold (retrained) model's result: pass reference=...")

    out.update(
        {
            "name": name or str(getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__),
            "benchmark": "muse",
            "privleak": mia["min_k"]["privleak"],
            "mia": mia,
            "splits": splits,
            "cost": {"wall_seconds": round(time.perf_counter() - t0, 3)},
            "meta": {
                "report_version": MUSE_REPORT_VERSION,
                "definitions": "muse",
                "verbmem_source": verbmem_source,
                "verbmem_max_new_tokens": verbmem_max_new_tokens,
                "knowmem_max_new_tokens": knowmem_max_new_tokens,
                "knowmem_stop_strings": list(M.MUSE_KNOWMEM_STOP),
                "rouge": "rougeL F1, use_stemmer=False",
                "mia_k": mia_k,
                "privleak_attack": "min_k",
                "max_length": max_length,
                "num_processes": acc.num_processes,
            },
            "notes": notes,
        }
    )
    return out
