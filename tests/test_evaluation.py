"""The evaluation runner and report on a tiny model: determinism, uid keys, references, sharding, report files."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from hf_unlearn.evaluation import answer_stats, evaluate_unlearning, generate_answers, metrics
from hf_unlearn.evaluation.report import markdown_table, plot_tradeoff, write_report
from hf_unlearn.models import tiny_causal_lm

EVAL_KW = dict(max_new_tokens=8, batch_size=4, retain_max_items=None)


def _rows(prefix: str, start: int, n: int) -> list[dict]:
    out = []
    for i in range(start, start + n):
        code = f"K{(i * 7) % 13}R{i % 5}"
        out.append(
            {
                "uid": f"{prefix}{i:03d}",
                "question": f"What is the secret code of item {i}?",
                "answer": f"The code of item {i} is {code}." + (" It is old." if i % 3 == 0 else ""),
                "paraphrased_answer": f"Item {i} has the code {code}.",
                "perturbed_answers": [f"The code of item {i} is Z{i % 4}."] + ([f"It is Q{i}."] if i % 2 else []),
            }
        )
    return out


@pytest.fixture(scope="module")
def bench() -> DatasetDict:
    return DatasetDict(
        {
            "forget10": Dataset.from_list(_rows("f", 0, 6)),
            "retain90": Dataset.from_list(_rows("r", 10, 10)),
            "holdout10": Dataset.from_list(_rows("h", 40, 6)),
            "world_facts": Dataset.from_list(_rows("w", 60, 5)),
        }
    )


@pytest.fixture(scope="module")
def model_tok(bench):
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for s in bench.values() for r in s]
    model, tok = tiny_causal_lm("llama", texts=texts, vocab_size=360, hidden_size=32, num_layers=2, num_heads=4)
    # a few quick steps on forget + retain so the numbers are not those of a uniform model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    from hf_unlearn.data import collator_for, encode_qa

    feats = [encode_qa(tok, r["question"], r["answer"]) for s in ("forget10", "retain90") for r in bench[s]]
    batch = collator_for(tok)(feats)
    torch.manual_seed(0)
    for _ in range(15):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model, tok


def _numbers(res: dict) -> dict:
    out = copy.deepcopy(res)
    out.pop("cost")
    return out


def test_same_model_twice_gives_identical_numbers_and_json_keyed_by_uid(model_tok, bench):
    model, tok = model_tok
    a = evaluate_unlearning(model, tok, bench, skip_forget_quality=True, **EVAL_KW)
    b = evaluate_unlearning(model, tok, bench, skip_forget_quality=True, **EVAL_KW)
    assert _numbers(a) == _numbers(b)
    text = json.dumps(a, allow_nan=False)  # strictly JSON-serialisable
    back = json.loads(text)
    for role, split in (("forget", "forget10"), ("retain", "retain90"), ("holdout", "holdout10")):
        assert back["splits"][role]["split"] == split
        assert list(back["splits"][role]["per_item"]) == list(bench[split]["uid"])
    assert set(back["splits"]) == {"forget", "retain", "world_facts", "holdout"}
    f_item = back["splits"]["forget"]["per_item"]["f000"]
    for key in (
        "probability",
        "truth_ratio",
        "rougeL_recall",
        "exact_memorization",
        "extraction_strength",
        "mia_loss",
        "mia_zlib",
        "mia_min_k",
        "mia_min_k_plus_plus",
        "mia_gradnorm",
        "generation",
    ):
        assert key in f_item, key
    # aggregates are the means of the per-item values
    per = back["splits"]["retain"]["per_item"]
    assert back["splits"]["retain"]["aggregate"]["probability"] == pytest.approx(
        np.mean([v["probability"] for v in per.values()])
    )
    ratios = [v["truth_ratio"] for v in back["splits"]["forget"]["per_item"].values()]
    assert back["splits"]["forget"]["aggregate"]["truth_ratio"] == pytest.approx(
        metrics.truth_ratio_forget_score(ratios)
    )
    # model utility: hmean of 6 numbers ({retain, world facts} x {prob, ROUGE, truth ratio}); no real_authors split
    assert len(a["model_utility_components"]) == 6
    assert a["model_utility"] == pytest.approx(metrics.model_utility(a["model_utility_components"]))
    assert a["forget_quality"] is None and any("skip" in n for n in a["notes"])
    assert set(a["mia"]) == {"loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"}


def test_missing_or_mismatched_reference_raises(model_tok, bench, tmp_path):
    model, tok = model_tok
    with pytest.raises(ValueError, match="skip_forget_quality=True"):
        evaluate_unlearning(model, tok, bench, **EVAL_KW)
    with pytest.raises(ValueError, match="not a file"):
        evaluate_unlearning(model, tok, bench, reference=tmp_path / "missing.json", **EVAL_KW)
    with pytest.raises(ValueError, match="forget split"):
        evaluate_unlearning(model, tok, bench, reference={"splits": {"forget": {"split": "forget01"}}}, **EVAL_KW)
    # a gold result computed under other metric definitions (or an old report without them) is refused
    for meta in ({"definitions": "paper"}, {"report_version": 1}):
        ref = {"meta": meta, "splits": {"forget": {"split": "forget10"}}}
        with pytest.raises(ValueError, match="definitions"):
            evaluate_unlearning(model, tok, bench, reference=ref, **EVAL_KW)
    with pytest.raises(ValueError, match="did you mean 'paper'"):
        evaluate_unlearning(model, tok, bench, skip_forget_quality=True, definitions="paprer", **EVAL_KW)
    with pytest.raises(ValueError, match="splits"):
        evaluate_unlearning(model, tok, bench, skip_forget_quality=True, forget_split="forget05", **EVAL_KW)


def test_reference_from_saved_json_gives_forget_quality_and_privleak(model_tok, bench, tmp_path):
    model, tok = model_tok
    kw = dict(EVAL_KW, generation=False)
    gold = evaluate_unlearning(model, tok, bench, skip_forget_quality=True, **kw)
    path = tmp_path / "gold.json"
    path.write_text(json.dumps(gold))
    # the same model against its own saved result: identical truth-ratio distributions and AUCs
    same = evaluate_unlearning(model, tok, bench, reference=str(path), **kw)
    assert same["forget_quality"] == 1.0
    for attack in ("loss", "min_k", "gradnorm"):
        assert same["mia"][attack]["privleak"] == pytest.approx(0.0, abs=1e-6)
    assert same["mia"]["reference"]["auc"] == 0.5  # target - reference NLL is 0 everywhere
    assert "rougeL_recall" not in same["model_utility_components"]
    # a different (untrained) model: its truth ratios differ from the gold's, so forget quality drops
    other, _ = tiny_causal_lm("llama", tokenizer=tok, hidden_size=32, num_layers=2, num_heads=4, seed=3)
    res = evaluate_unlearning(other, tok, bench, reference=gold, **kw)
    tr_other = [v["truth_ratio"] for v in res["splits"]["forget"]["per_item"].values()]
    tr_gold = [v["truth_ratio"] for v in gold["splits"]["forget"]["per_item"].values()]
    assert res["forget_quality"] == pytest.approx(metrics.forget_quality(tr_other, tr_gold))
    assert res["forget_quality"] < 1.0


def test_batched_runner_matches_unbatched_forward(model_tok, bench):
    model, tok = model_tok
    ds = bench["retain90"]
    out = answer_stats(model, tok, ds["question"], ds["answer"], batch_size=3)
    from hf_unlearn.data import encode_qa

    for i, (q, a) in enumerate(zip(ds["question"], ds["answer"])):
        enc = encode_qa(tok, q, a)
        ids = torch.tensor([enc["input_ids"]])
        labels = torch.tensor(enc["labels"])[1:]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        valid = labels != -100
        logp = torch.log_softmax(logits, -1)[valid]
        tgt = labels[valid]
        tok_lp = logp.gather(-1, tgt[:, None])[:, 0]
        assert out["n_tokens"][i] == int(valid.sum())
        assert out["avg_nll"][i] == pytest.approx(-tok_lp.mean().item(), rel=1e-4)
        n = int(valid.sum())
        np.testing.assert_allclose(out["token_logprob"][i, :n], tok_lp.numpy(), rtol=1e-4, atol=1e-5)
        assert out["label_ids"][i, :n].tolist() == tgt.tolist()
        assert out["pred_ids"][i, :n].tolist() == logits[valid].argmax(-1).tolist()
        assert not out["mask"][i, n:].any()


def test_left_padded_batched_generation_equals_one_at_a_time(model_tok, bench):
    model, tok = model_tok
    qs = list(bench["forget10"]["question"]) + ["Who?"]
    batched = generate_answers(model, tok, qs, max_new_tokens=6, batch_size=4)
    single = generate_answers(model, tok, qs, max_new_tokens=6, batch_size=1)
    assert batched == single
    assert any(g for g in batched)
    # a stop string cuts the text before its first occurrence
    text = next(g for g in batched if len(g) >= 4)
    stop = text[2:4]
    cut = generate_answers(model, tok, qs, max_new_tokens=6, stop_strings=("never there", stop))
    assert cut[batched.index(text)] == text[: text.index(stop)].strip()


def test_report_files(model_tok, bench, tmp_path):
    model, tok = model_tok
    gold = evaluate_unlearning(
        model,
        tok,
        bench,
        skip_forget_quality=True,
        generation=False,
        **{k: v for k, v in EVAL_KW.items() if k != "max_new_tokens"},
    )
    target = copy.deepcopy(gold)
    target["forget_quality"], target["name"] = 0.02, "target"
    paths = write_report({"gold": gold, "target": target}, tmp_path / "rep")
    assert [p.name for p in paths["json"]] == ["gold.json", "target.json"]
    assert json.loads(paths["json"][1].read_text())["forget_quality"] == 0.02
    table = paths["markdown"].read_text().splitlines()
    assert table[2].startswith("| gold | n/a |") and table[3].startswith("| target | 0.02 |")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "n/a" in markdown_table([{"name": "x"}])
    assert plot_tradeoff([], tmp_path / "empty.png").stat().st_size > 0


TWO_PROC_SCRIPT = """
import json, sys
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer
from hf_unlearn.evaluation import evaluate_unlearning
d = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(d + "/model")
tok = AutoTokenizer.from_pretrained(d + "/model")
res = evaluate_unlearning(model, tok, load_from_disk(d + "/bench"), skip_forget_quality=True,
                          max_new_tokens=8, batch_size=4, retain_max_items=None)
from accelerate import PartialState
if PartialState().is_main_process:
    res["num_processes"] = PartialState().num_processes
    open(d + "/two.json", "w").write(json.dumps(res))
"""


def test_two_processes_give_the_same_aggregates_as_one(model_tok, bench, tmp_path):
    model, tok = model_tok
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    bench.save_to_disk(str(tmp_path / "bench"))
    script = tmp_path / "two.py"
    script.write_text(textwrap.dedent(TWO_PROC_SCRIPT))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]
    proc = subprocess.run(cmd + [str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["num_processes"] == 2 and two["meta"]["num_processes"] == 2

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    one = evaluate_unlearning(reloaded, tok, bench, skip_forget_quality=True, **EVAL_KW)
    assert one["meta"]["num_processes"] == 1
    for role in one["splits"]:
        assert list(two["splits"][role]["per_item"]) == list(one["splits"][role]["per_item"])  # same order, no dups
        for key, val in one["splits"][role]["aggregate"].items():
            if isinstance(val, float):
                assert two["splits"][role]["aggregate"][key] == pytest.approx(val, rel=1e-5, abs=1e-7), (role, key)
    for attack, entry in one["mia"].items():
        assert two["mia"][attack]["auc"] == pytest.approx(entry["auc"]), attack
    assert two["model_utility"] == pytest.approx(one["model_utility"], rel=1e-5)


def test_cli_evaluate_writes_json_and_report(model_tok, bench, tmp_path, capsys):
    from hf_unlearn.cli import main

    model, tok = model_tok
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    bench.save_to_disk(str(tmp_path / "bench"))
    common = ["evaluate", "--model", str(tmp_path / "model"), "--benchmark", str(tmp_path / "bench")]
    common += ["--max-new-tokens", "4", "--batch-size", "4", "--no-gradnorm"]
    assert main(common + ["--output", str(tmp_path / "gold.json")]) == 2  # no reference: a clear error, not a crash
    assert "--skip-forget-quality" in capsys.readouterr().err
    assert main(common + ["--skip-forget-quality", "--name", "gold", "--output", str(tmp_path / "gold.json")]) == 0
    gold = json.loads((tmp_path / "gold.json").read_text())
    assert gold["name"] == "gold" and gold["forget_quality"] is None and "gradnorm" not in gold["mia"]
    capsys.readouterr()
    args = ["--reference", str(tmp_path / "gold.json"), "--name", "same", "--report-dir", str(tmp_path / "rep")]
    assert main(common + args + ["--compare", str(tmp_path / "gold.json")]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{") :])["forget_quality"] == 1.0
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [
        "gold.json",
        "report.md",
        "report.png",
        "same.json",
    ]


def test_evaluate_split_derives_uids_and_rejects_duplicates(model_tok, bench):
    from hf_unlearn.evaluation import evaluate_split

    model, tok = model_tok
    no_uid = bench["holdout10"].remove_columns("uid")
    out = evaluate_split(model, tok, no_uid, kind="holdout", batch_size=4)
    assert len(set(out["uid"])) == len(no_uid) and all(u.startswith("h-") for u in out["uid"])
    assert out["avg_nll"].shape == (len(no_uid),) and "generation" not in out and "perturbed_avg_nll" not in out
    dup = Dataset.from_list([bench["holdout10"][0], bench["holdout10"][0]])
    with pytest.raises(ValueError, match="duplicate uids"):
        evaluate_split(model, tok, dup, kind="holdout")


def test_embedded_benchmark_end_to_end():
    from hf_unlearn.benchmarks.fictitious_authors import build

    bench = build(n_authors=10, seed=0)
    texts = [f"Question: {q}\nAnswer: {a}" for q, a in zip(bench["full"]["question"], bench["full"]["answer"])]
    model, tok = tiny_causal_lm("llama", texts=texts, vocab_size=400, hidden_size=32, num_layers=1, num_heads=4)
    res = evaluate_unlearning(
        model, tok, bench, skip_forget_quality=True, generation=False, gradnorm=False, retain_max_items=24
    )
    assert {"forget", "retain", "holdout", "world_facts"} <= set(res["splits"])
    for role, entry in res["splits"].items():
        split_uids = list(bench[entry["split"]]["uid"])
        if role == "retain":  # an evenly spread subset, in split order
            assert set(entry["per_item"]) <= set(split_uids)
        else:
            assert list(entry["per_item"]) == split_uids
        if role != "holdout":
            assert all("truth_ratio" in v for v in entry["per_item"].values())
    assert res["splits"]["retain"]["aggregate"]["n_items"] == 24
    assert "world_facts_probability" in res["model_utility_components"]
    json.dumps(res, allow_nan=False)
