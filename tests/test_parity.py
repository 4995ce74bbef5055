"""Parity with the reference implementations: our numbers equal those of the code behind published TOFU / MUSE tables.

Every reference below is written here, independently of hf_unlearn, from the definitions in (commit-independent
line numbers as read for this test):

* OU  = locuslab/open-unlearning, src/evals/metrics/
    - utils.py: ``evaluate_probability`` (l.82-103: avg loss over every label token),
      ``tokenwise_logprobs`` / ``tokenwise_vocab_logprobs`` (l.106-190: the last label token, the EOS, is dropped),
      ``extract_target_texts_from_processed_data`` (l.333-340: ZLib's text), ``eval_text_similarity`` (l.251-330)
    - memorization.py: ``probability_w_options`` (l.44-72), ``truth_ratio`` (l.107-174), ``exact_memorization``
      (l.177-219), ``extraction_strength`` (l.222-269: the k loop, 1/N when the last token is wrong)
    - mia/min_k.py (l.18-26), mia/min_k_plus_plus.py (l.17-39), mia/zlib.py (l.25-29), mia/gradnorm.py (l.19-34:
      train mode), mia/reference.py (l.23-25), mia/utils.py ``mia_auc`` (l.30-70), privacy.py ``ks_test`` (l.6-32)
      and ``privleak`` (l.35-52)
* TOFU = locuslab/tofu: config/eval_everything.yaml (``base_answer_key``: the paraphrase on forget / retain, the
  answer on real authors and world facts), aggregate_eval_stat.py (l.10-26 forget quality, l.28-79 model utility)
* MUSE = swj0419/muse_bench: metrics/verbmem.py (l.7-41), metrics/knowmem.py (l.7-53), metrics/logger.py (l.7-29:
  ROUGE without stemming), metrics/privleak.py (l.13-61, l.64-92: ``compute_ppl``, Min-K%, zlib, ``sweep``),
  eval.py (l.78: privleak from the retrained model's AUC)

All comparisons run on real outputs of tiny trained models and assert agreement to 1e-6.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from hf_unlearn.data import encode_qa
from hf_unlearn.evaluation import evaluate_muse, evaluate_unlearning, grad_norms
from hf_unlearn.evaluation import metrics as M
from hf_unlearn.models import tiny_causal_lm

TOL = dict(rtol=1e-6, atol=1e-6)
IGN = -100


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
                "perturbed_answers": [f"The code of item {i} is Z{i % 4}.", f"It is Q{i}."],
            }
        )
    return out


@pytest.fixture(scope="module")
def bench() -> DatasetDict:
    return DatasetDict(
        {
            "forget10": Dataset.from_list(_rows("f", 0, 6)),
            "retain90": Dataset.from_list(_rows("r", 10, 8)),
            "holdout10": Dataset.from_list(_rows("h", 40, 6)),
            "world_facts": Dataset.from_list(_rows("w", 60, 5)),
        }
    )


def _train(model, tok, pairs, steps=15, lr=1e-2):
    from hf_unlearn.data import collator_for

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    batch = collator_for(tok)([encode_qa(tok, q, a) for q, a in pairs])
    torch.manual_seed(0)
    for _ in range(steps):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return model


@pytest.fixture(scope="module")
def models(bench):
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for s in bench.values() for r in s]
    kw = dict(vocab_size=360, hidden_size=32, num_layers=2, num_heads=4)
    target, tok = tiny_causal_lm("llama", texts=texts, **kw)
    pairs = lambda s: [(r["question"], r["answer"]) for r in bench[s]]  # noqa: E731
    _train(target, tok, pairs("forget10") + pairs("retain90"))
    gold, _ = tiny_causal_lm("llama", tokenizer=tok, seed=1, **kw)
    _train(gold, tok, pairs("retain90"))
    return target, gold, tok


# ------------------------------------------------------------------------------------------------ references
def ou_item(model, feat: dict) -> dict:
    """OU utils.py evaluate_probability + tokenwise_(vocab_)logprobs for one item (no padding)."""
    ids = torch.tensor([feat["input_ids"]])
    labels = torch.tensor([feat["labels"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    shifted = labels[..., 1:]
    losses = torch.nn.CrossEntropyLoss(ignore_index=IGN, reduction="none")(
        logits[..., :-1, :].transpose(-1, -2), shifted
    )
    avg_loss = (losses.sum(-1) / (labels != IGN).sum(-1)).item()
    log_probs = torch.log_softmax(logits, dim=-1)[:, :-1, :]
    target_lp = torch.gather(log_probs, 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    lab = labels[0]
    actual = (lab != IGN).nonzero(as_tuple=True)[0][:-1]  # "-1 to ignore eos prediction"
    start, end = actual[0].item(), actual[-1].item()
    return {
        "avg_loss": avg_loss,
        "tok_lp": target_lp[0, start - 1 : end],
        "vocab_lp": log_probs[0, start - 1 : end],
        "labels": lab[actual],
        "all_labels": lab[lab != IGN],
    }


def ou_em(item) -> float:
    preds = torch.argmax(item["vocab_lp"], dim=-1)
    return ((preds == item["labels"]).sum() / len(item["labels"])).item()


def ou_es(item) -> float:
    preds, labels = torch.argmax(item["vocab_lp"], dim=-1), item["labels"]
    n = len(labels)
    for k in range(n):
        if torch.equal(preds[k:], labels[k:]):
            break
    return 1 - k / n


def ou_min_k(tok_lp: torch.Tensor, k: float) -> float:
    lp = tok_lp.float().numpy()
    num_k = max(1, int(len(lp) * k))
    return float(-np.mean(np.sort(lp)[:num_k]))


def ou_min_k_pp(item, k: float) -> float:
    v = item["vocab_lp"]
    mu = (torch.exp(v) * v).sum(-1)
    sigma = torch.clamp((torch.exp(v) * torch.square(v)).sum(-1) - torch.square(mu), min=1e-6)
    scores = (item["tok_lp"].float().numpy() - mu.float().numpy()) / torch.sqrt(sigma).numpy()
    num_k = max(1, int(len(scores) * k))
    return float(-np.mean(sorted(scores)[:num_k]))


def ou_zlib(item, tok) -> float:
    text = tok.decode(item["all_labels"].tolist(), skip_special_tokens=True)
    return item["avg_loss"] / len(zlib.compress(text.encode("utf-8")))


def ou_gradnorm(model, feat: dict, p: float = 2.0) -> float:
    model.train()
    ids = torch.tensor([feat["input_ids"]])
    labels = torch.tensor(feat["labels"])
    logits = model(input_ids=ids).logits
    log_probs = torch.log_softmax(logits, dim=-1)[:, :-1, :]
    target_lp = torch.gather(log_probs, 2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    actual = (labels != IGN).nonzero(as_tuple=True)[0][:-1]
    loss = -torch.mean(target_lp[0, actual[0].item() - 1 : actual[-1].item()])
    model.zero_grad()
    loss.backward()
    norms = [q.grad.detach().norm(p=p) for q in model.parameters() if q.grad is not None]
    model.zero_grad()
    model.eval()
    return torch.stack(norms).mean().item()


def ou_gradnorm_attack(model, feats: list[dict]) -> list[float]:
    """OU all_attacks.py Attack.attack (l.42-53): iterate a torch DataLoader (its iterator draws one base seed from
    the global RNG, which matters once dropout is on), score each batch of one."""
    from torch.utils.data import DataLoader

    return [ou_gradnorm(model, batch[0]) for batch in DataLoader(feats, batch_size=1, collate_fn=list)]


def ou_truth_ratio(correct_loss: np.ndarray, wrong_losses: np.ndarray) -> np.ndarray:
    wrong = np.mean(wrong_losses, axis=tuple(range(1, wrong_losses.ndim)))  # aggregate_to_1D
    return np.exp(-wrong) / (np.exp(-correct_loss) + 1e-10)


def paper_es(preds: np.ndarray, labels: np.ndarray) -> float:
    """Carlini et al.: 1 - k/N with k the start of the longest correct suffix (k = N when the last one is wrong)."""
    n = len(labels)
    k = n
    while k > 0 and preds[k - 1] == labels[k - 1]:
        k -= 1
    return 1 - k / n


def ref_generate(model, tok, prompt_ids, max_new_tokens):
    out = model.generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return out[0, len(prompt_ids) :]


# ------------------------------------------------------------------------------------------------ pure functions
def test_memorization_pure_functions_match_reference_loops_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 9))
        labels = rng.integers(0, 3, n)
        preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 3, n))
        # OU: the last label is dropped, then the k loop / accuracy over the rest
        item = {"vocab_lp": torch.nn.functional.one_hot(torch.tensor(preds[:-1]), 3).float(), "labels": labels[:-1]}
        item["labels"] = torch.tensor(item["labels"])
        assert M.extraction_strength([preds], [labels])[0] == pytest.approx(ou_es(item), abs=1e-12)
        assert M.exact_memorization([preds], [labels])[0] == pytest.approx(ou_em(item), rel=1e-6)  # OU: float32
        assert M.extraction_strength([preds], [labels], "paper")[0] == pytest.approx(paper_es(preds, labels))
        assert M.exact_memorization([preds], [labels], "paper")[0] == pytest.approx(np.mean(preds == labels))
        lp = -rng.random(n) * 5
        k = float(rng.choice([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
        assert M.min_k_scores([lp], k=k)[0] == pytest.approx(ou_min_k(torch.tensor(lp[:-1]), k), rel=1e-6)


def test_truth_ratio_privleak_and_aggregates_match_reference_formulas():
    rng = np.random.default_rng(1)
    c, w = rng.random(50) * 6, rng.random((50, 3)) * 6
    tr = ou_truth_ratio(c, w)
    np.testing.assert_allclose(M.truth_ratio(c, w), tr, **TOL)
    assert M.truth_ratio_forget_score(tr) == pytest.approx(np.mean(np.minimum(tr, 1 / (tr + 1e-10))), abs=1e-12)
    assert M.truth_ratio_retain_score(tr) == pytest.approx(np.mean(np.maximum(0, 1 - tr)), abs=1e-12)
    # TOFU aggregate_eval_stat.py: curr_stat_1 = exp(perturbed - paraphrased) = 1 / R
    tofu = np.exp(w.mean(-1) - c)
    assert M.truth_ratio_retain_score(tr) == pytest.approx(np.mean(np.maximum(0, 1 - 1 / tofu)), abs=1e-9)
    for auc, ref in ((0.7, 0.45), (0.3, 0.5), (0.5, 0.9)):
        assert M.privleak(auc, ref) == pytest.approx(((1 - auc) - (1 - ref)) / ((1 - ref) + 1e-10) * 100, abs=1e-9)


# ------------------------------------------------------------------------------------------------ TOFU runner
@pytest.fixture(scope="module")
def tofu_results(models, bench):
    target, gold, tok = models
    kw = dict(max_new_tokens=8, batch_size=1, retain_max_items=None)
    gold_res = evaluate_unlearning(gold, tok, bench, skip_forget_quality=True, **kw)
    res = evaluate_unlearning(target, tok, bench, reference=gold_res, **kw)
    return res, gold_res


def _per_item(res, role, key, uids):
    return np.array([res["splits"][role]["per_item"][u][key] for u in uids], dtype=np.float64)


def test_tofu_report_matches_open_unlearning_per_item_and_aggregate(models, bench, tofu_results):
    from scipy.stats import hmean, ks_2samp
    from sklearn.metrics import roc_auc_score

    target, gold, tok = models
    res, gold_res = tofu_results
    assert res["meta"]["definitions"] == "open_unlearning" and res["meta"]["max_length"] == 512
    feats = lambda ds, col="answer": [encode_qa(tok, r["question"], r[col], max_length=512) for r in ds]  # noqa: E731
    mia_ref = {}
    for role, split in (("forget", "forget10"), ("holdout", "holdout10")):
        ds = bench[split]
        uids = list(ds["uid"])
        items = [ou_item(target, f) for f in feats(ds)]
        ref = {
            "avg_nll": [it["avg_loss"] for it in items],
            "exact_memorization": [ou_em(it) for it in items],
            "extraction_strength": [ou_es(it) for it in items],
            "mia_loss": [it["avg_loss"] for it in items],
            "mia_zlib": [ou_zlib(it, tok) for it in items],
            "mia_min_k": [ou_min_k(it["tok_lp"], 0.4) for it in items],
            "mia_min_k_plus_plus": [ou_min_k_pp(it, 0.4) for it in items],
            "mia_gradnorm": [ou_gradnorm(target, f) for f in feats(ds)],
            "mia_reference": [it["avg_loss"] - ou_item(gold, f)["avg_loss"] for it, f in zip(items, feats(ds))],
        }
        for key, vals in ref.items():
            np.testing.assert_allclose(_per_item(res, role, key, uids), vals, err_msg=f"{role} {key}", **TOL)
        for key in ("exact_memorization", "extraction_strength"):
            assert res["splits"][role]["aggregate"][key] == pytest.approx(np.mean(ref[key]), abs=1e-6)
        mia_ref[role] = ref
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference"):
        f, h = mia_ref["forget"][f"mia_{attack}"], mia_ref["holdout"][f"mia_{attack}"]
        auc = roc_auc_score([0] * len(f) + [1] * len(h), np.array(f + h))
        assert res["mia"][attack]["auc"] == pytest.approx(auc, abs=1e-6), attack
    for attack in ("loss", "min_k", "gradnorm"):
        ref_auc = gold_res["mia"][attack]["auc"]
        expected = ((1 - res["mia"][attack]["auc"]) - (1 - ref_auc)) / ((1 - ref_auc) + 1e-10) * 100
        assert res["mia"][attack]["privleak"] == pytest.approx(expected, abs=1e-6)

    # truth ratio: the paraphrase on forget / retain, the ANSWER on world facts (TOFU base_answer_key)
    comps = {}
    for role, split, correct_col, agg in (
        ("forget", "forget10", "paraphrased_answer", lambda r: np.mean(np.minimum(r, 1 / (r + 1e-10)))),
        ("retain", "retain90", "paraphrased_answer", lambda r: np.mean(np.maximum(0, 1 - r))),
        ("world_facts", "world_facts", "answer", lambda r: np.mean(np.maximum(0, 1 - r))),
    ):
        ds = bench[split]
        uids = list(ds["uid"])
        correct = np.array([ou_item(target, f)["avg_loss"] for f in feats(ds, correct_col)])
        wrong = np.array(
            [
                [ou_item(target, encode_qa(tok, r["question"], p))["avg_loss"] for p in r["perturbed_answers"]]
                for r in ds
            ]
        )
        tr = ou_truth_ratio(correct, wrong)
        np.testing.assert_allclose(_per_item(res, role, "truth_ratio", uids), tr, err_msg=role, **TOL)
        assert res["splits"][role]["aggregate"]["truth_ratio"] == pytest.approx(agg(tr), abs=1e-6)
        answer_loss = np.array([ou_item(target, f)["avg_loss"] for f in feats(ds)])
        if role == "world_facts":  # OU probability_w_options
            p_true, p_wrong = np.exp(-answer_loss), np.exp(-wrong).sum(-1)
            comps[f"{role}_probability"] = np.mean(p_true / (p_true + p_wrong + 1e-10))
        elif role == "retain":
            comps[f"{role}_probability"] = np.mean(np.exp(-answer_loss))
        if role != "forget":
            comps[f"{role}_truth_ratio"] = agg(tr)
        # generation and ROUGE-L recall with stemming (OU eval_text_similarity), greedy, one at a time
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
        recalls = []
        for r in ds:
            enc = encode_qa(tok, r["question"], "x", add_eos=False)
            prompt = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGN]
            text = tok.decode(ref_generate(target, tok, prompt, 8), skip_special_tokens=True)
            for stop in [tok.decode([tok.eos_token_id]), "\nQuestion:"]:
                if stop and stop in text:
                    text = text.split(stop)[0]
            text = text.strip()
            assert res["splits"][role]["per_item"][r["uid"]]["generation"] == text
            recalls.append(scorer.score(r["answer"], text)["rougeL"].recall)
        np.testing.assert_allclose(_per_item(res, role, "rougeL_recall", uids), recalls, **TOL)
        if role != "forget":
            comps[f"{role}_rougeL_recall"] = np.mean(recalls)
    assert res["model_utility"] == pytest.approx(hmean(list(comps.values())), abs=1e-6)
    # forget quality: KS test between the per-item truth ratios of the model and of the gold model (OU ks_test)
    uids = list(bench["forget10"]["uid"])
    fq = ks_2samp(_per_item(res, "forget", "truth_ratio", uids), _per_item(gold_res, "forget", "truth_ratio", uids))
    assert res["forget_quality"] == pytest.approx(fq.pvalue, abs=1e-12)


def test_paper_variant_scores_every_label_token(models, bench, tofu_results):
    target, _, tok = models
    res, _ = tofu_results
    ds = bench["forget10"]
    paper = evaluate_unlearning(
        target, tok, bench, skip_forget_quality=True, generation=False, gradnorm=False, definitions="paper"
    )
    assert paper["meta"]["definitions"] == "paper"
    changed = 0
    for r in ds:
        f = encode_qa(tok, r["question"], r["answer"], max_length=512)
        ids, labels = torch.tensor([f["input_ids"]]), torch.tensor(f["labels"])[1:]
        with torch.no_grad():
            logits = target(input_ids=ids).logits[0, :-1]
        valid = labels != IGN
        preds, lab = logits[valid].argmax(-1).numpy(), labels[valid].numpy()
        lp = torch.log_softmax(logits, -1)[valid].gather(-1, labels[valid][:, None])[:, 0].numpy()
        per = paper["splits"]["forget"]["per_item"][r["uid"]]
        assert per["exact_memorization"] == pytest.approx(np.mean(preds == lab), abs=1e-12)
        assert per["extraction_strength"] == pytest.approx(paper_es(preds, lab), abs=1e-12)
        assert per["mia_min_k"] == pytest.approx(ou_min_k(torch.tensor(lp), 0.4), rel=1e-6, abs=1e-6)
        changed += per["exact_memorization"] != res["splits"]["forget"]["per_item"][r["uid"]]["exact_memorization"]
    assert changed > 0  # the two definitions really differ on these outputs


def test_gradnorm_runs_in_train_mode_as_open_unlearning(models, bench):
    """With dropout active, OU's GradNorm (train mode) differs from eval mode; ours follows OU with the same RNG."""
    target, _, tok = models
    import copy

    model = copy.deepcopy(target)
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    r = bench["forget10"][0]
    f = encode_qa(tok, r["question"], r["answer"], max_length=512)
    torch.manual_seed(7)
    ours = grad_norms(model, tok, [r["question"]], [r["answer"]])[0]
    torch.manual_seed(7)
    ref = ou_gradnorm_attack(model, [f])[0]
    assert ours == pytest.approx(ref, rel=1e-6)
    assert not model.training  # the mode is restored
    eval_mode = grad_norms(model, tok, [r["question"]], [r["answer"]], definition="paper")[0]
    assert abs(eval_mode - ours) > 1e-4


# ------------------------------------------------------------------------------------------------ MUSE
FORGET = [
    "the red fox jumps over the lazy dog while the farmer sleeps under the old oak tree near the river bank",
    "a blue bird sings in the tall tree every morning and the children listen from the small wooden house",
    "the ship sailed across the cold sea for many days until the sailors saw the lights of the harbour town",
    "on the hill stands a castle with seven towers where the old king keeps his books and his golden maps",
]
HOLDOUT = [
    "green frogs sit on wet stones by the quiet pond and wait for flies to pass in the warm evening light",
    "the small cat naps under the warm sun while the dog watches the road for the postman and his bicycle",
    "snow covered the mountain village and the baker lit his oven before dawn to make bread for everyone",
    "the library opened a new room full of maps and the students came to read about faraway islands",
]
QA = [
    {"question": "What does the red fox jump over?", "answer": "the lazy dog"},
    {"question": "How many towers does the castle have?", "answer": "seven towers"},
]
ICL = [{"question": "Where does the farmer sleep?", "answer": "under the old oak tree"}]


@pytest.fixture(scope="module")
def muse_models():
    from hf_unlearn.data import collator_for

    texts = FORGET + HOLDOUT + [f"Question: {q['question']}\nAnswer: {q['answer']}" for q in QA + ICL]
    kw = dict(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4)
    target, tok = tiny_causal_lm("llama", texts=texts, **kw)
    opt = torch.optim.AdamW(target.parameters(), lr=1e-2)
    qa_texts = [f"Question: {q['question']}\nAnswer: {q['answer']}\n\n" for q in QA]
    enc = [tok(t) for t in FORGET + qa_texts]
    batch = collator_for(tok)(
        [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"], "labels": e["input_ids"]} for e in enc]
    )
    for _ in range(30):
        target(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    target.eval()
    gold, _ = tiny_causal_lm("llama", tokenizer=tok, seed=2, **kw)
    gold.eval()
    return target, gold, tok


def muse_compute_ppl(text, model, tok):
    """MUSE metrics/privleak.py compute_ppl + inference (Min-40%, PPL/zlib)."""
    input_ids = torch.tensor(tok.encode(text)).unsqueeze(0)
    with torch.no_grad():
        out = model(input_ids, labels=input_ids)
    probs = torch.nn.functional.log_softmax(out.logits, dim=-1)
    all_prob = [probs[0, i, t].item() for i, t in enumerate(input_ids[0][1:])]
    k_length = int(len(all_prob) * 0.4)
    loss = out.loss.item()
    return {
        "PPL": loss,
        "PPL/zlib": loss / len(zlib.compress(bytes(text, "utf-8"))),
        "Min-40%": float(-np.mean(np.sort(all_prob)[:k_length])),
    }


def muse_auc(forget_vals, holdout_vals):
    """MUSE sweep(): roc_curve(y, -ppl) with forget as split0 (y = 0) and holdout as split1 (y = 1)."""
    from sklearn.metrics import auc, roc_curve

    ppl = np.array(forget_vals + holdout_vals)
    y = np.array([0] * len(forget_vals) + [1] * len(holdout_vals))
    fpr, tpr, _ = roc_curve(y, -ppl)
    return auc(fpr, tpr)


def test_muse_verbmem_knowmem_privleak_match_muse_bench(muse_models):
    from rouge_score import rouge_scorer

    target, gold, tok = muse_models
    kw = dict(
        forget_texts=FORGET,
        holdout_texts=HOLDOUT,
        knowmem_forget=QA,
        knowmem_forget_icl=ICL,
        knowmem_retain=QA[::-1],
        verbmem_prompt_tokens=8,
        verbmem_max_new_tokens=16,
        knowmem_max_new_tokens=8,
        batch_size=3,
    )
    gold_res = evaluate_muse(gold, tok, **kw)
    res = evaluate_muse(target, tok, reference=gold_res, **kw)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=False)

    # VerbMem: prompt = the first 8 tokens of each forget text; MUSE's eval on (prompt, gt)
    vm = []
    for text in FORGET:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prompt, gt = tok.decode(ids[:8]), tok.decode(ids[8:])
        input_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        out = tok.batch_decode(
            [ref_generate(target, tok, input_ids, 16)], skip_special_tokens=True, clean_up_tokenization_spaces=True
        )[0]
        gt_ids = tok(gt, add_special_tokens=True)["input_ids"][:16]
        gt_short = tok.batch_decode([gt_ids], skip_special_tokens=True, clean_up_tokenization_spaces=True)[0]
        vm.append(scorer.score(gt_short, out)["rougeL"].fmeasure)
    assert res["verbmem_f"] == pytest.approx(np.mean(vm) * 100, abs=1e-6)
    assert max(vm) > 0  # the trained model reproduces some of its forget texts

    # KnowMem: few-shot prompt, 8 new tokens, cut at MUSE's stop words
    for key, qa in (("knowmem_f", QA), ("knowmem_r", QA[::-1])):
        scores = []
        for d in qa:
            prompt = "".join(
                f"Question: {q['question']}\nAnswer: {q['answer']}\n\n" for q in ICL if key == "knowmem_f"
            )
            prompt += f"Question: {d['question']}\nAnswer: "
            input_ids = tok(prompt, add_special_tokens=True)["input_ids"]
            out = tok.batch_decode(
                [ref_generate(target, tok, input_ids, 8)], skip_special_tokens=True, clean_up_tokenization_spaces=True
            )[0]
            for word in ["\n\n", "\nQuestion", "Question:"]:
                out = out.split(word)[0]
            scores.append(scorer.score(d["answer"], out)["rougeL"].fmeasure)
        assert res[key] == pytest.approx(np.mean(scores) * 100, abs=1e-6), key
        assert max(scores) > 0, key  # the model learnt the QA: a non-trivial comparison

    # PrivLeak: MUSE's AUC is 1 - ours; privleak = (AUC - AUC_retrain) / AUC_retrain * 100 on MUSE's AUCs
    for attack, muse_key in (("loss", "PPL"), ("zlib", "PPL/zlib"), ("min_k", "Min-40%")):
        t_f = [muse_compute_ppl(x, target, tok)[muse_key] for x in FORGET]
        t_h = [muse_compute_ppl(x, target, tok)[muse_key] for x in HOLDOUT]
        g_f = [muse_compute_ppl(x, gold, tok)[muse_key] for x in FORGET]
        g_h = [muse_compute_ppl(x, gold, tok)[muse_key] for x in HOLDOUT]
        per = [res["splits"]["forget"]["per_item"][u][f"mia_{attack}"] for u in res["splits"]["forget"]["per_item"]]
        np.testing.assert_allclose(per, t_f, **TOL)
        auc_t, auc_g = muse_auc(t_f, t_h), muse_auc(g_f, g_h)
        assert res["mia"][attack]["auc"] == pytest.approx(1 - auc_t, abs=1e-9)
        expected = (auc_t - auc_g) / auc_g * 100
        assert res["mia"][attack]["privleak"] == pytest.approx(expected, abs=1e-6)
    assert res["privleak"] == res["mia"]["min_k"]["privleak"]
    assert res["meta"]["definitions"] == "muse"


def test_muse_table_and_input_errors(muse_models, tmp_path):
    from hf_unlearn.evaluation.report import muse_table, write_report

    target, _, tok = muse_models
    r = {"name": "x", "benchmark": "muse", "verbmem_f": 10.0, "knowmem_f": 5.0, "knowmem_r": 50.0, "privleak": 1.5}
    table = muse_table([r])
    assert (
        "VerbMem forget (lower" in table
        and "PrivLeak Min-K (ideal 0)" in table
        and "| x | 10 | 5 | 50 | 1.5 |" in table
    )
    assert "VerbMem" in write_report([r], tmp_path)["markdown"].read_text()
    with pytest.raises(KeyError, match="prompt"):
        evaluate_muse(target, tok, forget_texts=FORGET, holdout_texts=HOLDOUT, verbmem=[{"gt": "x"}])
    with pytest.raises(ValueError, match="verbmem_prompt_tokens"):
        evaluate_muse(target, tok, forget_texts=["a b"], holdout_texts=HOLDOUT, verbmem_prompt_tokens=50)
