"""Pure metric functions on hand-computed inputs (METRICS.md definitions) and the evaluate.Metric wrapper."""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_unlearn.evaluation import metrics as M

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------------ probabilities
def test_probability_is_exp_of_minus_avg_nll_and_averages_multiple_answers():
    assert M.probability([0.0, LN2, 2 * LN2]).tolist() == pytest.approx([1.0, 0.5, 0.25])
    # two answers for item 0 (mean of 1.0 and 0.25), one for item 1 (NaN = missing)
    out = M.probability(np.array([[0.0, 2 * LN2], [LN2, np.nan]]))
    assert out.tolist() == pytest.approx([0.625, 0.5])
    with pytest.raises(ValueError, match="no answer"):
        M.probability(np.array([[np.nan, np.nan]]))


def test_normalised_probability_matches_hand_computation():
    # P_true = 0.5, P_pert = 0.25 + 0.125 -> 0.5 / 0.875
    out = M.normalised_probability([LN2], [[2 * LN2, 3 * LN2]])
    assert out[0] == pytest.approx(0.5 / 0.875)
    with pytest.raises(ValueError, match="n_perturbed"):
        M.normalised_probability([0.1, 0.2], [[0.1, 0.1]])


# ------------------------------------------------------------------------------------------------ truth ratio
def test_truth_ratio_uses_geometric_mean_of_perturbed_probabilities():
    correct = [1.0, 0.5]
    wrong = [[2.0, 4.0], [0.5, np.nan]]  # item 1 has a single perturbed answer
    r = M.truth_ratio(correct, wrong)
    # P_wrong = exp(-3) (geometric mean of exp(-2), exp(-4)), P_correct = exp(-1)
    assert r[0] == pytest.approx(math.exp(-3) / math.exp(-1))
    assert r[1] == pytest.approx(1.0)
    # an arithmetic mean of probabilities would give a different number: make sure we are not computing that
    assert r[0] != pytest.approx(((math.exp(-2) + math.exp(-4)) / 2) / math.exp(-1))


def test_truth_ratio_aggregates():
    r = np.array([0.25, 1.0, 4.0])
    assert M.truth_ratio_forget_score(r) == pytest.approx((0.25 + 1.0 + 0.25) / 3)
    assert M.truth_ratio_retain_score(r) == pytest.approx((0.75 + 0.0 + 0.0) / 3)
    # extreme ratios do not overflow: min(R, 1/R) -> 0
    assert M.truth_ratio_forget_score([np.inf, 0.0]) == 0.0


# ------------------------------------------------------------------------------------------------ forget quality
def test_forget_quality_identical_distributions_is_one_and_different_is_small():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 1.0, 40)
    assert M.forget_quality(a, a.copy()) == 1.0
    assert M.forget_quality(a, rng.permutation(a)) == 1.0
    far = M.forget_quality(a, a + 5.0)
    assert far < 1e-6
    from scipy.stats import ks_2samp

    b = rng.uniform(0.3, 1.2, 30)
    assert M.forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)


@pytest.mark.parametrize("ref", [None, [], np.array([])])
def test_forget_quality_without_reference_is_an_explicit_error(ref):
    with pytest.raises(ValueError, match="gold retain model"):
        M.forget_quality([0.5, 0.6], ref)


# ------------------------------------------------------------------------------------------------ model utility
def test_model_utility_is_harmonic_mean_and_zero_when_any_component_is_zero():
    assert M.model_utility([0.5, 1.0]) == pytest.approx(2 / (1 / 0.5 + 1 / 1.0))
    nine = {f"c{i}": 0.3 + 0.05 * i for i in range(9)}
    assert M.model_utility(nine) == pytest.approx(9 / sum(1 / v for v in nine.values()))
    nine["c4"] = 0.0
    assert M.model_utility(nine) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        M.model_utility([0.5, -0.1])
    with pytest.raises(ValueError, match="empty"):
        M.model_utility([])


# ------------------------------------------------------------------------------------------------ memorization
def test_exact_memorization_paper_counts_every_label_position():
    preds = np.array([[7, 1, 2, 9], [7, 5, 5, 5]])
    labels = np.array([[-100, 1, 2, 3], [-100, -100, 5, -100]])
    assert M.exact_memorization(preds, labels, "paper").tolist() == pytest.approx([2 / 3, 1.0])
    # one-token answers, ragged lists
    assert M.exact_memorization([[4], [3]], [[4], [5]], "paper").tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="no label position"):
        M.exact_memorization([[1, 2]], [[-100, -100]], "paper")


def test_exact_memorization_open_unlearning_drops_the_last_label_token():
    preds = np.array([[7, 1, 2, 9], [7, 5, 5, 5], [0, 1, 9, 4]])
    labels = np.array([[-100, 1, 2, 3], [-100, -100, 5, -100], [-100, 1, 2, 3]])
    # row 0: positions 1, 2 scored (the wrong last one is dropped) -> 1.0; row 1: nothing left -> NaN (OU: None)
    out = M.exact_memorization(preds, labels)
    assert out[0] == 1.0 and np.isnan(out[1]) and out[2] == 0.5
    assert M.exact_memorization(preds, labels, definition="open_unlearning")[2] == 0.5
    with pytest.raises(ValueError, match="did you mean 'paper'"):
        M.exact_memorization(preds, labels, definition="papers")


def test_extraction_strength_paper_suffix_definition():
    labels = [[1, 2, 3, 4]]
    es = lambda p, lab: M.extraction_strength(p, lab, definition="paper").tolist()  # noqa: E731
    assert es([[1, 2, 3, 4]], labels) == [1.0]  # all match: k* = 0
    assert es([[9, 2, 3, 4]], labels) == [0.75]  # k* = 1
    assert es([[1, 2, 9, 4]], labels) == [0.25]  # k* = 3
    assert es([[1, 2, 3, 9]], labels) == [0.0]  # last wrong: k* = N
    # ignored positions do not count, and the index is over label positions only
    assert es([[0, 9, 2, 3, 0]], [[-100, 1, 2, 3, -100]]) == pytest.approx([2 / 3])
    # one-token answer
    assert es([[5], [6]], [[5], [5]]) == [1.0, 0.0]


def test_extraction_strength_open_unlearning_drops_eos_and_gives_one_over_n():
    labels = [[1, 2, 3, 4, 2]]  # the last label (2) plays the EOS: never scored
    es = lambda p: M.extraction_strength(p, labels).tolist()  # noqa: E731
    assert es([[1, 2, 3, 4, 9]]) == [1.0]  # a wrong EOS does not matter
    assert es([[9, 2, 3, 4, 2]]) == [0.75]  # k = 1 of N = 4
    assert es([[1, 2, 3, 9, 2]]) == [0.25]  # last scored token wrong: 1/N, not 0
    assert es([[1, 2, 9, 4, 2]]) == [0.25]  # only the last scored token right: also 1/N
    # a one-token answer has nothing left after the drop: 0, as in OpenUnlearning
    assert M.extraction_strength([[5]], [[5]]).tolist() == [0.0]


# ------------------------------------------------------------------------------------------------ MIA scores
def test_loss_zlib_reference_scores():
    assert M.loss_scores(torch.tensor([0.5, 1.5])).tolist() == [0.5, 1.5]
    texts = ["aaaaaaaaaaaaaaaaaaaa", "the quick brown fox jumps"]
    out = M.zlib_scores([2.0, 3.0], texts)
    assert out.tolist() == pytest.approx(
        [2.0 / len(zlib.compress(texts[0].encode())), 3.0 / len(zlib.compress(texts[1].encode()))]
    )
    assert M.reference_scores([2.0, 1.0], [0.5, 1.5]).tolist() == [1.5, -0.5]
    with pytest.raises(ValueError, match="texts"):
        M.zlib_scores([1.0], ["a", "b"])


def test_min_k_open_unlearning_drops_the_last_token():
    lp = np.array([[-1.0, -3.0, -2.0, -0.5, -0.1, -9.0], [-2.0, -7.0, 0.0, 0.0, 0.0, 0.0]])
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=bool)
    # row 0: the -9 (last) is dropped, int(0.4 * 5) = 2 lowest of the rest; row 1: nothing left -> 0 (OU)
    assert M.min_k_scores(lp, k=0.4, mask=mask).tolist() == pytest.approx([2.5, 0.0])
    assert M.min_k_scores(lp, k=0.4, mask=mask, definition="paper").tolist() == pytest.approx([6.0, 2.0])


def test_min_k_hand_computed_with_padding_ties_and_one_token():
    lp = np.array([[-1.0, -3.0, -2.0, -0.5, -0.1], [-2.0, 0.0, 0.0, 0.0, 0.0], [-1.0, -1.0, -1.0, -1.0, -4.0]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    out = M.min_k_scores(lp, k=0.4, mask=mask, definition="paper")
    # row 0: floor(0.4*5)=2 lowest = -3, -2; row 1: one token (at least one); row 2: -4 and one of the tied -1s
    assert out.tolist() == pytest.approx([2.5, 2.0, 2.5])
    # padding values never leak in, whatever they are
    lp2 = lp.copy()
    lp2[1, 1:] = -100.0
    assert M.min_k_scores(lp2, k=0.4, mask=mask, definition="paper").tolist() == pytest.approx(out.tolist())
    # ragged input == padded + mask
    ragged = [lp[0], lp[1, :1], lp[2]]
    assert M.min_k_scores(ragged, k=0.4, definition="paper").tolist() == pytest.approx(out.tolist())
    # k = 1 is the LOSS-like mean of all tokens
    assert M.min_k_scores([[-1.0, -3.0]], k=1.0, definition="paper").tolist() == [2.0]
    with pytest.raises(ValueError, match="k must be"):
        M.min_k_scores(lp, k=0.0)
    with pytest.raises(ValueError, match="no token"):
        M.min_k_scores(lp, mask=np.zeros_like(mask))


def test_min_k_plus_plus_stats_and_scores_match_a_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11)
    mu, sigma = M.min_k_plus_plus_stats(logits)
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    for b in range(2):
        for t in range(3):
            m = float((p[b, t] * logp[b, t]).sum())
            v = float((p[b, t] * logp[b, t] ** 2).sum()) - m * m
            assert mu[b, t].item() == pytest.approx(m, rel=1e-5)
            assert sigma[b, t].item() == pytest.approx(math.sqrt(max(v, 1e-6)), rel=1e-4)
    ids = torch.tensor([[1, 4, 7], [2, 2, 10]])
    tok_lp = logp.gather(-1, ids[..., None])[..., 0]
    scores = M.min_k_plus_plus_scores(tok_lp, mu, sigma, k=0.4, definition="paper")
    z = ((tok_lp - mu.double()) / sigma.double()).numpy()
    expected = [-np.sort(z[b])[:1].mean() for b in range(2)]  # floor(0.4*3) = 1 token
    assert scores.tolist() == pytest.approx(expected, rel=1e-5)
    # open_unlearning (default): the last token of each row is left out
    scores = M.min_k_plus_plus_scores(tok_lp, mu, sigma, k=0.4)
    assert scores.tolist() == pytest.approx([-np.sort(z[b, :2])[:1].mean() for b in range(2)], rel=1e-5)
    # a degenerate (one-hot) distribution: the variance clamp keeps sigma finite
    _, s = M.min_k_plus_plus_stats(torch.tensor([[0.0, -1e4, -1e4]]))
    assert s.item() == pytest.approx(1e-3)


def test_mia_auc_label_convention_and_identical_distributions():
    # forget (label 0) has LOWER loss than holdout: perfectly separable -> AUC 1 (still memorised)
    assert M.mia_auc([0.1, 0.2, 0.3], [1.0, 1.1]) == 1.0
    assert M.mia_auc([1.0, 1.1], [0.1, 0.2, 0.3]) == 0.0
    rng = np.random.default_rng(1)
    s = rng.normal(size=50)
    assert M.mia_auc(s, s.copy()) == 0.5
    with pytest.raises(ValueError, match="empty"):
        M.mia_auc([], [0.1])


def test_privleak_sign_conventions():
    assert M.privleak(0.5, 0.5) == pytest.approx(0.0)
    # forget set looks memorised (AUC above the retain model's) -> negative (under-unlearned)
    assert M.privleak(0.9, 0.5) == pytest.approx(((0.1 - 0.5) / 0.5) * 100)
    assert M.privleak(0.9, 0.5) < 0
    # forget set looks "more unseen" than for the retain model -> positive (over-unlearned)
    assert M.privleak(0.2, 0.5) > 0
    with pytest.raises(ValueError, match="auc_retain"):
        M.privleak(0.5, None)


def test_grad_norm_reduction_and_perplexity():
    grads = [torch.tensor([[3.0, 4.0]]), None, torch.tensor([0.0, 0.0, 2.0])]
    assert M.grad_norm(grads) == pytest.approx((5.0 + 2.0) / 2)
    assert M.grad_norm([torch.tensor([1.0, -2.0])], p=1) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="no gradient"):
        M.grad_norm([None])
    # token-weighted: (1*ln2 + 3*ln8) / 4 = 2.5 ln2
    assert M.perplexity([LN2, 3 * LN2], [1, 3]) == pytest.approx(2**2.5)


# ------------------------------------------------------------------------------------------------ ROUGE
def test_rouge_recall_f1_and_empty_generation():
    out = M.rouge_scores(["the cat sat", "", "   ", "cats sitting"], ["the cat sat down", "gold", "gold", "cat sits"])
    assert out["rougeL_recall"].tolist() == pytest.approx([0.75, 0.0, 0.0, 1.0])  # stemming: cats->cat, sitting->sit
    assert out["rougeL_f1"][0] == pytest.approx(2 * 1.0 * 0.75 / 1.75)
    assert set(out) == {"rouge1_recall", "rouge1_f1", "rougeL_recall", "rougeL_f1"}
    no_stem = M.rouge_scores(["cats sitting"], ["cat sits"], use_stemmer=False)
    assert no_stem["rougeL_recall"].tolist() == [0.0]
    # rougeL recall is order-sensitive, rouge1 is not
    rev = M.rouge_scores(["sat cat the"], ["the cat sat"])
    assert rev["rouge1_recall"][0] == 1.0 and rev["rougeL_recall"][0] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------ evaluate.Metric
def test_unlearning_metric_loads_offline_by_local_path(monkeypatch, tmp_path):
    import evaluate

    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    path = Path(M.__file__).with_name("unlearning_metric.py")
    metric = evaluate.load(str(path), "truth_ratio")
    out = metric.compute(predictions=[2.0, 4.0], references=[1.0, 1.0])
    # predictions: avg NLL of the (single) perturbed answer, references: avg NLL of the paraphrase
    assert out["truth_ratio"] == pytest.approx([math.exp(-1), math.exp(-3)])
    assert out["truth_ratio_retain_score"] == pytest.approx(np.mean([1 - math.exp(-1), 1 - math.exp(-3)]))

    rouge = evaluate.load(str(path), "rouge")
    res = rouge.compute(predictions=["the cat sat", ""], references=["the cat sat down", "gold"])
    assert res["rougeL_recall"] == pytest.approx(0.375)

    mia = evaluate.load(str(path), "mia")
    res = mia.compute(predictions=[0.1, 0.2, 0.9, 0.8], references=[0, 0, 1, 1])
    assert res["auc"] == 1.0
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"
    with pytest.raises(ValueError, match="config"):
        evaluate.load(str(path), "not_a_metric")
