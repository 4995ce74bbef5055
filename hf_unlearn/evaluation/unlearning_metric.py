"""An `evaluate` metric exposing hf_unlearn's unlearning metrics, loadable offline by local path.

Usage::

    import evaluate
    from hf_unlearn.evaluation import unlearning_metric
    metric = evaluate.load(unlearning_metric.__file__, "truth_ratio")
    metric.compute(predictions=[[2.0, 4.0]], references=[1.0])

Configurations (the second argument of ``evaluate.load``) and their inputs:

* ``probability``: predictions = per-item mean answer NLL.
* ``normalised_probability``: predictions = per-item list of perturbed-answer mean NLLs, references = true-answer NLL.
* ``truth_ratio``: predictions = perturbed-answer mean NLL(s) (a float or a list per item), references = the
  paraphrased answer's mean NLL.
* ``forget_quality``: predictions = per-item truth ratios of the unlearned model, references = those of the gold
  retain model (same forget split).
* ``model_utility``: predictions = the component scores (probability, ROUGE, truth-ratio scores).
* ``rouge``: predictions = generated answers, references = gold answers; ``use_stemmer`` keyword (default True).
* ``memorization``: predictions = aligned teacher-forced argmax ids, references = label ids (-100 ignored).
* ``min_k``: predictions = per-item token log-probs; ``k`` keyword (default 0.4).
* ``memorization`` and ``min_k`` take ``definition="open_unlearning"`` (default: the last label token is not scored)
  or ``"paper"`` (see :mod:`hf_unlearn.evaluation.metrics`).
* ``mia``: predictions = per-sample MIA scores, references = 0 (forget) / 1 (holdout); ``auc_retain`` keyword
  adds privleak.

Definitions: hf_unlearn.evaluation.metrics (one import per line below: evaluate parses imports line by line).
"""

import datasets
import evaluate
import numpy as np

from hf_unlearn.evaluation import metrics as M

_CITATION = """\
@inproceedings{maini2024tofu, title={TOFU: A Task of Fictitious Unlearning for LLMs}, author={Maini, Pratyush and
Feng, Zhili and Schwarzschild, Avi and Lipton, Zachary C. and Kolter, J. Zico}, booktitle={COLM}, year={2024}}
"""

_DESCRIPTION = "Unlearning metrics (TOFU / MUSE definitions): probability, truth ratio, forget quality, model "
_DESCRIPTION += "utility, ROUGE, exact memorization, extraction strength, Min-K%, MIA AUC and privleak."

_KWARGS_DESCRIPTION = "See the module docstring of hf_unlearn/evaluation/unlearning_metric.py for each config."

_FLOAT = datasets.Value("float64")
_FLOATS = datasets.Sequence(datasets.Value("float64"))
_IDS = datasets.Sequence(datasets.Value("int64"))
_STR = datasets.Value("string")

_FEATURES = {
    "probability": datasets.Features({"predictions": _FLOAT}),
    "normalised_probability": datasets.Features({"predictions": _FLOATS, "references": _FLOAT}),
    "truth_ratio": [
        datasets.Features({"predictions": _FLOATS, "references": _FLOAT}),
        datasets.Features({"predictions": _FLOAT, "references": _FLOAT}),
    ],
    "forget_quality": datasets.Features({"predictions": _FLOAT, "references": _FLOAT}),
    "model_utility": datasets.Features({"predictions": _FLOAT}),
    "rouge": datasets.Features({"predictions": _STR, "references": _STR}),
    "memorization": datasets.Features({"predictions": _IDS, "references": _IDS}),
    "min_k": datasets.Features({"predictions": _FLOATS}),
    "mia": datasets.Features({"predictions": _FLOAT, "references": datasets.Value("int64")}),
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UnlearningMetric(evaluate.Metric):
    """Unlearning metrics; pick one with the config name (``evaluate.load(path, "truth_ratio")``)."""

    def _info(self):
        if self.config_name not in _FEATURES:
            raise ValueError(
                f"unknown config {self.config_name!r} for the unlearning metric; valid configs: {sorted(_FEATURES)}"
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES[self.config_name],
            reference_urls=["https://arxiv.org/abs/2401.06121", "https://arxiv.org/abs/2407.06460"],
        )

    def _compute(
        self, predictions=None, references=None, use_stemmer=True, k=0.4, auc_retain=None, definition="open_unlearning"
    ):
        name = self.config_name
        if name == "probability":
            per_item = M.probability(np.asarray(predictions, dtype=np.float64))
            return {"probability": float(per_item.mean()), "per_item": per_item.tolist()}
        if name == "normalised_probability":
            wrong, _ = M.pad_ragged(predictions, pad_value=np.nan)
            per_item = M.normalised_probability(references, wrong)
            return {"normalised_probability": float(per_item.mean()), "per_item": per_item.tolist()}
        if name == "truth_ratio":
            wrong, _ = M.pad_ragged([np.atleast_1d(p) for p in predictions], pad_value=np.nan)
            ratios = M.truth_ratio(references, wrong)
            return {
                "truth_ratio": ratios.tolist(),
                "truth_ratio_forget_score": M.truth_ratio_forget_score(ratios),
                "truth_ratio_retain_score": M.truth_ratio_retain_score(ratios),
            }
        if name == "forget_quality":
            return {"forget_quality": M.forget_quality(predictions, references)}
        if name == "model_utility":
            return {"model_utility": M.model_utility(predictions)}
        if name == "rouge":
            scores = M.rouge_scores(predictions, references, use_stemmer=use_stemmer)
            return {key: float(v.mean()) for key, v in scores.items()}
        if name == "memorization":
            em = M.exact_memorization(predictions, references, definition)
            es = M.extraction_strength(predictions, references, definition)
            return {"exact_memorization": float(np.nanmean(em)), "extraction_strength": float(es.mean())}
        if name == "min_k":
            scores = M.min_k_scores(predictions, k=k, definition=definition)
            return {"min_k": scores.tolist()}
        # mia
        labels = np.asarray(references)
        bad = sorted(set(labels.tolist()) - {0, 1})
        if bad:
            raise ValueError(f"mia references must be 0 (forget) or 1 (holdout), got {bad}")
        scores = np.asarray(predictions, dtype=np.float64)
        auc = M.mia_auc(scores[labels == 0], scores[labels == 1])
        out = {"auc": auc}
        if auc_retain is not None:
            out["privleak"] = M.privleak(auc, auc_retain)
        return out
