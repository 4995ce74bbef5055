"""Greedy answer generation: hf_unlearn's batched path against a plain one-item-at-a-time ``model.generate`` loop.

Both sides answer the same questions with the same ``max_new_tokens`` and must produce exactly the same text (the
script fails otherwise):

* baseline: for each question, ``model.generate(prompt, max_new_tokens=...)`` with default settings (greedy, KV
  cache, stops at EOS only), decoded, then cut at the first stop string ``"\\nQuestion:"`` and stripped;
* candidate: :func:`hf_unlearn.evaluation.runner.generate_answers` (length-sorted batches, left padding, KV cache,
  ``GenerationConfig(stop_strings=...)`` so that a sequence stops once it starts the next question);
* for information, the candidate without stop strings (batching alone).

The model is a tiny Llama fine-tuned for a few seconds on chained QA text ("Question: ...\\nAnswer: ...\\nQuestion:
..."), so, like a base model, it goes on with the next question after answering: the case stop strings exist for.
Runs alternate (baseline, candidate, ...) so that load from other processes hits both; the ratio uses the medians.
Peak memory is the peak process RSS over a run minus the RSS before it (the CUDA allocator's peak on a GPU).
Prints one JSON line.

Usage:
    python benchmarks/generation.py [--items 64] [--max-new-tokens 48] [--batch-size 16] [--repeats 3] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from hf_unlearn import finetune  # noqa: E402
from hf_unlearn.data import IGNORE_INDEX, encode_qa  # noqa: E402
from hf_unlearn.evaluation.runner import DEFAULT_STOP_STRINGS, generate_answers  # noqa: E402
from hf_unlearn.models import tiny_causal_lm  # noqa: E402
from hf_unlearn.utils.profiling import measure  # noqa: E402


def _qa(n: int) -> list[tuple[str, str]]:
    return [
        (
            f"What is the code of book {i}{' by the author of the series' * (i % 3)}?",
            f"The code of book {i} is K{(i * 7) % 13}R{i % 5}, written in {1900 + i % 97}.",
        )
        for i in range(n)
    ]


def _baseline(model, tok, questions: list[str], max_new_tokens: int, stops) -> list[str]:
    """One ``model.generate`` call per question, default settings."""
    out = []
    for q in questions:
        enc = encode_qa(tok, q, "x", add_eos=False)
        prompt = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE_INDEX]
        with torch.inference_mode():
            seq = model.generate(
                torch.tensor([prompt], device=model.device),
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        new = seq[0, len(prompt) :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        text = tok.decode(new, skip_special_tokens=True)
        for s in stops:
            if s in text:
                text = text[: text.index(s)]
        out.append(text.strip())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    torch.manual_seed(0)
    qa = _qa(args.items)
    chains = [
        "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in (qa[i:] + qa[:i])[:3]) for i in range(len(qa))
    ]  # each QA pair followed by the next ones: the model learns to go on asking after an answer
    model, tok = tiny_causal_lm("llama", texts=chains, vocab_size=512, hidden_size=64, num_layers=2)
    model = finetune(model, tok, [{"text": t} for t in chains], num_epochs=25, learning_rate=5e-3).model.eval()
    questions = [q for q, _ in qa]
    stops = DEFAULT_STOP_STRINGS
    runs = {
        "baseline": lambda: _baseline(model, tok, questions, args.max_new_tokens, stops),
        "candidate": lambda: generate_answers(
            model, tok, questions, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop_strings=stops
        ),
        "candidate_no_stop_strings": lambda: _cut(
            generate_answers(
                model, tok, questions, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop_strings=()
            ),
            stops,
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            with measure() as m:
                t0 = time.perf_counter()
                outputs[name] = fn()
                times[name].append(time.perf_counter() - t0)
            d = m.as_dict()
            peaks[name].append(d.get("peak_cuda_mib", d["delta_rss_mib"]))
    identical = outputs["candidate"] == outputs["baseline"] == outputs["candidate_no_stop_strings"]
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "generation",
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "items": len(questions),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "stop_strings": list(stops),
        "items_cut_by_a_stop_string": sum(
            any(s in r for s in stops) for r in _baseline_raw(model, tok, questions, args.max_new_tokens)
        ),
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "peak_mib": {k: round(max(v), 1) for k, v in peaks.items()},
        "ratio": round(med["baseline"] / med["candidate"], 2),
        "ratio_without_stop_strings": round(med["baseline"] / med["candidate_no_stop_strings"], 2),
        "identical_outputs": identical,
        "target": 3.0,
        "ok": identical and med["baseline"] / med["candidate"] >= 3.0,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(line + "\n")
    if not identical:
        bad = [i for i, (a, b) in enumerate(zip(outputs["baseline"], outputs["candidate"])) if a != b]
        raise SystemExit(f"outputs differ at items {bad[:10]}")


def _cut(texts: list[str], stops) -> list[str]:
    out = []
    for t in texts:
        for s in stops:
            if s in t:
                t = t[: t.index(s)]
        out.append(t.strip())
    return out


def _baseline_raw(model, tok, questions: list[str], max_new_tokens: int) -> list[str]:
    """Baseline continuations before the stop-string cut (to count the items a stop string shortens)."""
    return _baseline(model, tok, questions, max_new_tokens, ())


if __name__ == "__main__":
    main()
