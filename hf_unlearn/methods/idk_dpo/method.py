"""IdkDPO: Direct Preference Optimization toward a refusal (the DPO baseline of TOFU's follow-ups and
OpenUnlearning's ``DPO`` trainer on ``QAwithIdkDataset``).

For a forget question x with answer y_l (rejected) and a refusal y_w drawn from a list of "I don't know" answers
(preferred), with ``log pi(y|x)`` the summed log-likelihood of the answer tokens and ``pi_ref`` the model before
unlearning:

    h = [log pi_theta(y_w|x) - log pi_ref(y_w|x)] - [log pi_theta(y_l|x) - log pi_ref(y_l|x)]
    L = forget_weight * E[ -(2/beta) * log sigmoid(beta * h) ] + alpha * L_retain

The 2/beta scale is OpenUnlearning's (and the SimNPO/NPO authors' code); it makes the gradient at the start equal to
that of NLL(y_w) - NLL(y_l), whatever beta. Defaults follow OpenUnlearning: beta 0.1, forget and retain weights 1,
NLL retain term.

The refusal of a forget example is redrawn each time the example is seen (like OpenUnlearning's dataset), but
deterministically from ``(seed, uid, draw count)``, so one and several processes draw the same refusals.
``pi_ref(y_l|x)`` is fixed and computed once before training; ``pi_ref(y_w|x)`` is computed per step by the
reference: the same model with the unlearning adapter disabled when ``lora`` is set, else a frozen copy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.data import UID, collator_for, encode_qa, tokenize_any
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.idk_dpo.refusals import REFUSALS
from hf_unlearn.registry import Paper
from hf_unlearn.training.engine import ReferenceModel, precompute_sequence_nll, prepare_model
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs


def load_refusals(refusals: str | Path | Sequence[str] | None) -> list[str]:
    """The refusal answers: the built-in list (None), your list of strings, or a UTF-8 file with one a line.

    Raises:
        FileNotFoundError: a path that does not exist. ValueError: an empty list, or an entry that is not a
        non-empty string.

    Example:
        >>> len(load_refusals(None)) >= 20
        True
        >>> load_refusals(["I don't know.", "No idea."])
        ["I don't know.", 'No idea.']
    """
    if refusals is None:
        return list(REFUSALS)
    if isinstance(refusals, (str, Path)):
        path = Path(refusals)
        if not path.is_file():
            raise FileNotFoundError(
                f"refusals: {str(refusals)!r} is not a file; pass a file with one refusal a line, a list of strings, "
                "or None for the built-in list"
            )
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not items:
            raise ValueError(f"refusals file {str(path)!r} holds no refusal (one a line, blank lines ignored)")
        return items
    items = list(refusals)
    bad = [r for r in items if not isinstance(r, str) or not r.strip()]
    if not items or bad:
        raise ValueError(f"refusals must be a non-empty list of non-empty strings, got {items[:5]!r}")
    return items


@dataclass
class IdkDPOConfig(UnlearnConfig):
    beta: float = field(default=0.1, metadata={"help": "DPO inverse temperature beta (> 0; OpenUnlearning 0.1)."})
    forget_weight: float = field(default=1.0, metadata={"help": "Weight of the DPO forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term."})
    retain_loss: str = field(default="nll", metadata={"help": "Retain term: 'nll' (OpenUnlearning), 'kl' or 'none'."})
    refusals: Any = field(
        default=None,
        metadata={
            "help": "Preferred answers: None (the built-in list of 50 refusals), a list of strings, or the path of a "
            "UTF-8 text file with one refusal a line."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("beta", self.beta, 0, lo_open=True)
        check_range("forget_weight", self.forget_weight, 0)
        check_range("alpha", self.alpha, 0)
        check_choice("retain_loss", self.retain_loss, ("nll", "kl", "none"))
        load_refusals(self.refusals)  # raises on a bad value


def dpo_loss(
    nll_chosen: torch.Tensor,
    ref_nll_chosen: torch.Tensor,
    nll_rejected: torch.Tensor,
    ref_nll_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """``-(2/beta) * mean log sigmoid(beta * h)`` from per-sequence summed NLLs (``log pi = -NLL``).

    Example:
        >>> import torch
        >>> z = torch.zeros(2)
        >>> round(float(dpo_loss(z, z, z, z, beta=0.1)), 4)     # h = 0: (2/beta) * log 2
        13.8629
    """
    h = (ref_nll_chosen - nll_chosen) - (ref_nll_rejected - nll_rejected)  # [B]
    return -(2.0 / beta) * F.logsigmoid(beta * h).mean()


class IdkDPOTrainer(UnlearnTrainer):
    """DPO with a refusal drawn per (seed, uid, draw count) as the preferred answer, plus the retain term."""

    def __init__(
        self,
        *args: Any,
        questions: dict[str, str],
        refusals: list[str],
        ref_nll: dict[str, float],
        refusal_tokenizer: Any,
        max_length: int,
        template: str,
        seed: int,
        beta: float,
        forget_weight: float,
        alpha: float,
        retain_loss: str,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        self.questions, self.refusals, self.ref_nll = questions, refusals, ref_nll
        self.beta, self.forget_weight, self.alpha, self.retain_loss = beta, forget_weight, alpha, retain_loss
        self._tok, self._max_length, self._template, self._seed = refusal_tokenizer, max_length, template, seed
        self._collate = collator_for(refusal_tokenizer)
        self._encoded: dict[tuple[str, int], dict[str, list[int]]] = {}
        self._draws: dict[str, int] = {}
        self._reference = ReferenceModel(self.model, self.reference_mode)

    def refusal_index(self, uid: str) -> int:
        """The refusal for ``uid``'s next draw: a function of (seed, uid, draw count) only. The draw count is the
        epoch index while training (the same on every rank), else the number of earlier draws of ``uid``."""
        k = self._draws.get(uid, 0)
        self._draws[uid] = k + 1
        if getattr(self, "epoch_index", -1) >= 0:
            k = self.epoch_index
        return random.Random(f"{self._seed}:{uid}:{k}").randrange(len(self.refusals))

    def refusal_batch(self, uids: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        rows = []
        for u in uids:
            key = (u, self.refusal_index(u))
            if key not in self._encoded:
                self._encoded[key] = encode_qa(
                    self._tok, self.questions[u], self.refusals[key[1]], max_length=self._max_length,
                    template=self._template,
                )  # fmt: skip
            rows.append(self._encoded[key])
        return {k: v.to(device) for k, v in self._collate(rows).items() if torch.is_tensor(v)}

    def unlearning_loss(self, model, forget, retain):
        uids = list(self.current_uids)
        labels = forget["labels"]
        chosen = self.refusal_batch(uids, labels.device)
        if model.training:
            self.count_tokens(chosen)
        nll_chosen = sequence_nll(model(**model_inputs(chosen)).logits, chosen["labels"], reduction="sum")  # [B]
        ref_nll_chosen = sequence_nll(self._reference.logits(model, chosen), chosen["labels"], reduction="sum")
        nll_rejected = sequence_nll(model(**model_inputs(forget)).logits, labels, reduction="sum")  # [B]
        ref_nll_rejected = torch.tensor(
            [self.ref_nll[u] for u in uids], device=labels.device, dtype=nll_rejected.dtype
        )
        loss = self.forget_weight * dpo_loss(nll_chosen, ref_nll_chosen, nll_rejected, ref_nll_rejected, self.beta)
        if self.retain_loss != "none" and retain is not None:
            loss = loss + self.alpha * self.retain_term(model, retain, self.retain_loss)
        return loss


class IdkDPO(UnlearningMethod):
    name = "idk_dpo"
    config_cls = IdkDPOConfig
    reference = Paper(
        title="Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
        authors=(
            "Rafael Rafailov and Archit Sharma and Eric Mitchell and Stefano Ermon and Christopher D. Manning and "
            "Chelsea Finn"
        ),
        arxiv="2305.18290",
        year=2023,
        venue="NeurIPS 2023",
    )
    description = (
        "IdkDPO: Direct Preference Optimization with a refusal (an 'I don't know' answer) as the preferred answer "
        "and the forget answer as the rejected one, plus a retain-set NLL term (the TOFU / OpenUnlearning DPO "
        "baseline). Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 5e-4, "batch_size": 8}
    paper = (
        "Rafailov et al., Direct Preference Optimization (arXiv 2305.18290), with refusals as in TOFU "
        "(arXiv 2401.06121)"
    )

    trainer_cls = IdkDPOTrainer
    trainer_arguments = ("max_length", "template", "seed", "beta", "forget_weight", "alpha", "retain_loss")

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        c = self.config
        cols = set(forget.column_names)
        if not {"question", "answer", UID} <= cols:
            raise ValueError(
                "idk_dpo pairs each forget question with a refusal, so the forget set needs 'question', 'answer' and "
                f"'uid' columns; it has {sorted(cols)}"
            )
        questions = dict(zip(forget[UID], forget["question"]))
        model, ref_mode = prepare_model(model, c)
        forget_tok = tokenize_any(forget, tokenizer, max_length=c.max_length, template=c.template)
        collate = collator_for(tokenizer)
        if ref_mode == "adapter_disabled":
            with model.disable_adapter():
                ref_nll = precompute_sequence_nll(model, forget_tok, collate, c.batch_size)
        else:
            ref_nll = precompute_sequence_nll(model, forget_tok, collate, c.batch_size)
        return self.train_unlearning(
            model,
            tokenizer,
            forget_tok,
            retain,
            model_ready=True,
            reference_mode=ref_mode,
            questions=questions,
            refusals=load_refusals(c.refusals),
            ref_nll=ref_nll,
            refusal_tokenizer=tokenizer,
        )
