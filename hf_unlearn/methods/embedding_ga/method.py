"""``embedding_ga``: calibrated gradient ascent on the embedding layer with recorded first-epoch gradients.

A reconstruction from the abstract of Zagardo, "A More Practical Approach to Machine Unlearning" (arXiv 2406.09391;
the full text is public but could not be read with the project's tools, see docs/methods/embedding_ga.md); every
choice below is an option of :class:`EmbeddingGAConfig`.

Mode ``recorded`` (default)::

    G      = sum_{x in F} sum_{e in epochs} g_e(x)       # recorded d meanNLL(x) / d embedding output, scattered
                                                         # by token id onto token rows (and by position onto wpe)
    d      = G / ||G||   (normalize="global")  or  G     # one ascent direction
    repeat:  E[rows] += eta * d                          # only the rows F's tokens (positions) touch; with
                                                         # tied_gradient="input_and_output" every vocab row
             stop when  forget mean NLL >= target        # target: holdout mean NLL (before) or target_nll
                    or  retain mean NLL - start > tol    # then undo the last step (rollback, bit-exact)
                    or  steps == step_cap

Mode ``iterative``: the same stopping rule around live gradient ascent (``torch.optim.SGD(maximize=True)`` on the
mean NLL of ONE forget example per step, cycling through F), restricted to ``param_scope`` (default: the
embedding tables). Fuzzy deletion: ``request_text=`` selects F from the candidate pool (``forget``) with rapidfuzz.

A custom loop instead of ``Trainer``: the stopping rule (forget/retain evaluation, rollback) runs between single
steps, and the recorded mode has no forward/backward pass at all.

Example:
    >>> import hf_unlearn
    >>> from hf_unlearn.methods.embedding_ga import EmbeddingGradientRecorder
    >>> # rec = EmbeddingGradientRecorder("runs/egrads"); finetune(model, tok, train, callbacks=[rec])
    >>> # res = hf_unlearn.unlearn(model, forget_uids, method="embedding_ga", tokenizer=tok, train_dataset=train,
    >>> #                          holdout=holdout, recording_dir="runs/egrads")
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets

from hf_unlearn.data import UID, exclude_uids
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.methods.embedding_ga.config import EmbeddingGAConfig
from hf_unlearn.methods.embedding_ga.influence import (
    _batches,
    activation_scores,
    as_dataset,
    embedding_params,
    lissa_scores,
    only_grad_for,
)
from hf_unlearn.methods.embedding_ga.recorder import MODEL_ATTR, EmbeddingGradientStore, MissingRecordingError
from hf_unlearn.models import decoder_layers, embedding_modules, unwrap
from hf_unlearn.registry import Paper
from hf_unlearn.training import losses
from hf_unlearn.training.losses import sequence_nll
from hf_unlearn.training.trainer import model_inputs


# ----------------------------------------------------------------------------------------------- fuzzy matching
def example_texts(ds: Dataset, field: str = "auto") -> list[str]:
    """The text each example is matched on: ``text``, ``question``, ``answer`` or (auto) text / question+answer."""
    cols = set(ds.column_names)
    if field == "auto":
        field = "text" if "text" in cols else "qa"
    if field == "qa":
        if not {"question", "answer"} <= cols:
            raise KeyError(f"fuzzy matching needs a 'text' or 'question'/'answer' columns, got {ds.column_names}")
        return [f"{q} {a}" for q, a in zip(ds["question"], ds["answer"])]
    if field not in cols:
        raise KeyError(f"fuzzy_field {field!r} is not a column of the candidates; columns: {ds.column_names}")
    return [str(t) for t in ds[field]]


def fuzzy_match(
    request_text: str | list[str],
    candidates: Any,
    *,
    threshold: float = 90.0,
    scorer: str = "WRatio",
    field: str = "auto",
) -> tuple[Dataset, dict[str, float]]:
    """The candidates whose text matches any request at or above ``threshold`` (rapidfuzz, 0-100).

    Args:
        request_text: one request or several (a candidate matching any of them is selected).
        candidates: the training examples (Dataset or anything ``load_examples`` takes).
        threshold: minimum score; scorer: a ``rapidfuzz.fuzz`` function name; field: see :func:`example_texts`.

    Returns:
        ``(matched subset, {uid: best score})``.

    Example:
        >>> data = [{"uid": "a", "text": "Ada Lovelace wrote the first program"}, {"uid": "b", "text": "Cats purr"}]
        >>> list(fuzzy_match("ada lovelace wrote the first program", data)[0]["uid"])
        ['a']
    """
    from rapidfuzz import fuzz, process, utils

    ds = as_dataset(candidates)
    requests = [request_text] if isinstance(request_text, str) else list(request_text)
    if not requests or not all(isinstance(r, str) and r.strip() for r in requests):
        raise ValueError(f"request_text must be a non-empty string or list of strings, got {request_text!r}")
    texts = example_texts(ds, field)
    score_fn = getattr(fuzz, scorer)
    best: dict[int, float] = {}
    for req in requests:
        for _, score, idx in process.extract(
            req, texts, scorer=score_fn, processor=utils.default_process, score_cutoff=threshold, limit=None
        ):
            best[idx] = max(best.get(idx, 0.0), float(score))
    keep = sorted(best)
    return ds.select(keep), {ds[i][UID]: best[i] for i in keep}


# ----------------------------------------------------------------------------------------------- helpers
@torch.no_grad()
def mean_nll(
    model: Any, tokenizer: Any, ds: Dataset, *, batch_size: int = 16, max_length: int = 128, template: str = "plain"
) -> float:
    """Mean over examples of the per-example token-mean NLL of the label tokens (model in its current mode)."""
    return losses.mean_nll(model, _batches(model, tokenizer, ds, batch_size, max_length, template), per="example")


def untie_embeddings(model: Any) -> bool:
    """Give a tied output layer its own copy of the embedding matrix; True when something was untied."""
    inner = unwrap(model)
    out, inp = inner.get_output_embeddings(), inner.get_input_embeddings()
    if out is None or out.weight is not inp.weight:
        return False
    out.weight = torch.nn.Parameter(inp.weight.detach().clone(), requires_grad=inp.weight.requires_grad)
    inner.config.tie_word_embeddings = False
    return True


def is_tied(model: Any) -> bool:
    inner = unwrap(model)
    out = inner.get_output_embeddings()
    return out is not None and out.weight is inner.get_input_embeddings().weight


def resolve_store(model: Any, config: EmbeddingGAConfig, recording: Any = None) -> EmbeddingGradientStore:
    """The recording to use: ``recording=`` (path or store) > ``config.recording_dir`` > the model's attribute."""
    if isinstance(recording, EmbeddingGradientStore):
        return recording
    path = recording or config.recording_dir or getattr(unwrap(model), MODEL_ATTR, None)
    if path is None:
        raise MissingRecordingError(
            "embedding_ga mode='recorded' needs the first-epoch embedding gradients recorded while the model was "
            "fine-tuned, and this model has none: fine-tune with hf_unlearn.finetune(model, tok, data, "
            "callbacks=[EmbeddingGradientRecorder(dir)]) and pass recording_dir=dir (or recording=dir); or use "
            "mode='iterative' (live ascent, no recording needed)"
        )
    return EmbeddingGradientStore(os.fspath(path))


# ----------------------------------------------------------------------------------------------- method
class EmbeddingGA(UnlearningMethod):
    name = "embedding_ga"
    config_cls = EmbeddingGAConfig
    reference = Paper(
        title="A More Practical Approach to Machine Unlearning",
        authors="David Zagardo",
        arxiv="2406.09391",
        year=2024,
        venue="arXiv",
    )
    description = (
        "Gradient ascent on the embedding layer with the forget examples' gradients recorded during the first "
        "training epoch, calibrated to stop when the forget set looks like unseen data. Approximate; hf_unlearn's "
        "version is a reconstruction from the paper's abstract."
    )
    unlearn_arguments = ("holdout", "recording", "request_text")
    paper = (
        "Zagardo, A More Practical Approach to Machine Unlearning (arXiv 2406.09391): first-epoch gradient ascent "
        "on the embedding layer; reconstruction from the abstract"
    )

    config: EmbeddingGAConfig

    needs_recording = True
    benchmark_bf16 = False  # retrain-free: runs fp32

    @classmethod
    def training_recorders(cls, ctx: Any) -> list[Any]:
        """First-epoch embedding gradients, recorded while the target trains."""
        from hf_unlearn.methods.embedding_ga.recorder import EmbeddingGradientRecorder

        return [EmbeddingGradientRecorder(ctx.path("embedding_ga_recording"))]

    @classmethod
    def benchmark_inputs(cls, ctx: Any, config: dict[str, Any]) -> dict[str, Any]:
        """The holdout (its target) and the recording made while the target trained."""
        return {"holdout": ctx.holdout, "recording": str(ctx.recorders["embedding_ga"][0].output_dir)}

    def unlearn(
        self,
        model: Any,
        tokenizer: Any,
        forget: Dataset,
        retain: Dataset | None = None,
        *,
        holdout: Any = None,
        recording: Any = None,
        request_text: str | list[str] | None = None,
        **kwargs: Any,
    ) -> MethodOutput:
        """Unlearn ``forget`` (or, with ``request_text``, the examples of ``forget`` matching it).

        Args:
            model, tokenizer: the fine-tuned LM (modified in place).
            forget: the forget set; with ``request_text`` the candidate pool (e.g. the whole training set).
            retain: examples whose NLL must not rise more than ``retain_tolerance`` (with ``request_text`` and no
                retain set: the unmatched candidates).
            holdout: examples the model never saw; their mean NLL (before unlearning) is the default target.
            recording: an :class:`EmbeddingGradientStore` or its folder (mode ``recorded``).
            request_text: fuzzy deletion request(s).
        """
        if kwargs:
            raise TypeError(
                f"embedding_ga got unexpected argument(s) {sorted(kwargs)}; it takes holdout=, recording=, "
                "request_text= and EmbeddingGAConfig fields"
            )
        cfg = self.config
        details: dict[str, Any] = {"mode": cfg.mode}
        if request_text is not None:
            pool = forget
            forget, scores = fuzzy_match(
                request_text, pool, threshold=cfg.fuzzy_threshold, scorer=cfg.fuzzy_scorer, field=cfg.fuzzy_field
            )
            if len(forget) == 0:
                raise ValueError(
                    f"no candidate matches request_text at fuzzy_threshold={cfg.fuzzy_threshold} "
                    f"({cfg.fuzzy_scorer}); lower the threshold or pass the examples' uids"
                )
            details["fuzzy_matches"] = scores
            retain = exclude_uids(retain if retain is not None else pool, list(scores))
            retain = retain if len(retain) else None
        details["forget_uids"] = list(forget[UID])
        kw = dict(batch_size=cfg.eval_batch_size, max_length=cfg.max_length, template=cfg.template)
        if retain is not None and len(retain) > cfg.retain_eval_size:
            retain = retain.shuffle(seed=cfg.seed).select(range(cfg.retain_eval_size))
        was_training = model.training
        model.eval()  # deterministic NLLs and ascent steps (no dropout)

        details["tied_embeddings"] = is_tied(model)
        details["untied"] = untie_embeddings(model) if cfg.untie else False
        # target of the calibration
        target, source = cfg.target_nll, "target_nll" if cfg.target_nll is not None else None
        if target is None and holdout is not None:
            target, source = mean_nll(model, tokenizer, as_dataset(holdout), **kw), "holdout"
        details.update(target_nll=target, target_source=source, calibrated=cfg.calibrate and target is not None)

        request = request_text if request_text is not None else forget
        if cfg.influence:
            details["influence_before"] = self._influence(model, tokenizer, request, forget, retain)

        t0 = time.perf_counter()
        if cfg.mode == "recorded":
            step, snapshot, restore, info = self._recorded_steps(model, forget, recording)
        else:
            step, snapshot, restore, info = self._iterative_steps(model, tokenizer, forget)
        tokens_fn = info.pop("_tokens")
        details.update(info)
        loop = self._calibrated_loop(
            step,
            snapshot,
            restore,
            lambda: mean_nll(model, tokenizer, forget, **kw),
            (lambda: mean_nll(model, tokenizer, retain, **kw)) if retain is not None else None,
            target,
        )
        details.update(loop)
        unlearn_seconds = time.perf_counter() - t0

        if cfg.influence:
            details["influence_after"] = self._influence(model, tokenizer, request, forget, retain)
        model.train(was_training)
        return MethodOutput(
            model=model, details=details, timings={"ascent": unlearn_seconds}, tokens_processed=int(tokens_fn())
        )

    # ------------------------------------------------------------------------------------------- stopping rule
    def _calibrated_loop(self, step, snapshot, restore, forget_nll, retain_nll, target) -> dict[str, Any]:
        cfg = self.config
        f0 = forget_nll()
        r0 = retain_nll() if retain_nll is not None else None
        history = [{"step": 0, "forget_nll": f0, "retain_nll": r0}]
        out: dict[str, Any] = {"forget_nll_before": f0, "retain_nll_before": r0, "rolled_back": 0}
        use_target = cfg.calibrate and target is not None
        stop, steps = "step_cap", 0
        if use_target and f0 >= target:
            stop = "target_already_met"
        else:
            snap, last_check = snapshot(), 0
            for k in range(1, cfg.step_cap + 1):
                step(k)
                steps = k
                if k % cfg.eval_every and k != cfg.step_cap:
                    continue
                f = forget_nll()
                r = retain_nll() if retain_nll is not None else None
                history.append({"step": k, "forget_nll": f, "retain_nll": r})
                if not math.isfinite(f) or (
                    r is not None
                    and cfg.retain_tolerance is not None
                    and (r - r0 > cfg.retain_tolerance or not math.isfinite(r))
                ):
                    stop = "retain_tolerance" if math.isfinite(f) else "non_finite"
                    if cfg.rollback:
                        restore(snap)
                        out["rolled_back"] = k - last_check
                        steps = last_check
                    break
                if use_target and f >= target:
                    stop = "target_reached"
                    break
                snap, last_check = snapshot(), k
        out.update(
            steps=steps,
            stop_reason=stop,
            history=history,
            forget_nll_after=forget_nll(),
            retain_nll_after=retain_nll() if retain_nll is not None else None,
        )
        return out

    # ------------------------------------------------------------------------------------------- recorded mode
    def _recorded_steps(self, model, forget, recording):
        cfg = self.config
        store = resolve_store(model, cfg, recording)
        mods = embedding_modules(model)
        tok_w = mods["token"].weight
        if store.meta.get("hidden_size") not in (None, tok_w.shape[1]):
            raise ValueError(
                f"the recording's hidden size {store.meta['hidden_size']} differs from the model's {tok_w.shape[1]}: "
                "it was recorded on another model"
            )
        missing_epochs = sorted(set(cfg.epochs) - set(store.epochs))
        if missing_epochs:
            raise KeyError(f"epochs {missing_epochs} were not recorded; recorded epochs: {store.epochs}")
        with_output = cfg.tied_gradient == "input_and_output"
        if with_output and not store.has_output_path:
            raise ValueError(
                "tied_gradient='input_and_output' needs a recording of the output-layer path too: record with "
                "EmbeddingGradientRecorder(..., tied_gradient='input_and_output') or use tied_gradient='input'"
            )
        if with_output and not is_tied(model):
            raise ValueError("tied_gradient='input_and_output' needs tied input/output embeddings (and untie=False)")
        rows, tok_grad, prow, pos_grad = store.row_gradients(forget[UID], cfg.epochs, include_output=with_output)
        pos_w = mods["position"].weight if mods["position"] is not None and cfg.update_positions else None
        if pos_w is None:
            prow = pos_grad = None
        if int(rows.max()) >= tok_w.shape[0]:
            raise ValueError(f"recorded token id {int(rows.max())} exceeds the model's vocabulary ({tok_w.shape[0]})")
        norm = float(torch.sqrt(tok_grad.pow(2).sum() + (pos_grad.pow(2).sum() if pos_grad is not None else 0.0)))
        scale = cfg.eta / norm if cfg.normalize == "global" and norm > 0 else cfg.eta
        dev = tok_w.device
        rows, d_tok = rows.to(dev), (scale * tok_grad).to(dev, tok_w.dtype)  # [U], [U, H]
        if prow is not None:
            prow, d_pos = prow.to(dev), (scale * pos_grad).to(dev, pos_w.dtype)  # [P], [P, H]

        @torch.no_grad()
        def step(k):
            tok_w[rows] += d_tok  # ascent: the recorded gradient raises the forget loss
            if prow is not None:
                pos_w[prow] += d_pos

        def snapshot():
            return tok_w[rows].detach().clone(), pos_w[prow].detach().clone() if prow is not None else None

        @torch.no_grad()
        def restore(snap):
            tok_w[rows] = snap[0]
            if prow is not None:
                pos_w[prow] = snap[1]

        info = {
            "recording": str(store.path),
            "epochs_used": list(cfg.epochs),
            "tied_gradient": cfg.tied_gradient,
            "rows_updated": int(len(rows)),
            "position_rows_updated": int(len(prow)) if prow is not None else 0,
            "gradient_norm": norm,
            "recording_bytes_per_example": store.meta.get("bytes", 0) / max(store.meta.get("records", 1), 1),
            "_tokens": lambda: 0,
        }
        return step, snapshot, restore, info

    # ------------------------------------------------------------------------------------------- iterative mode
    def _scope_params(self, model) -> list[torch.nn.Parameter]:
        cfg = self.config
        if cfg.param_scope == "embedding":
            return embedding_params(model, positions=cfg.update_positions)
        if cfg.param_scope == "last_blocks":
            blocks = decoder_layers(model)[-cfg.num_last_blocks :]
            return [p for b in blocks for p in b.parameters()]
        return list(dict.fromkeys(unwrap(model).parameters()))

    def _iterative_steps(self, model, tokenizer, forget):
        cfg = self.config
        params = self._scope_params(model)
        order = list(range(len(forget)))
        if cfg.shuffle:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        batches = list(_batches(model, tokenizer, forget, 1, cfg.max_length, cfg.template))
        opt = torch.optim.SGD(params, lr=cfg.learning_rate, maximize=True)  # plain ascent, no momentum
        counter = {"tokens": 0}

        def step(k):
            batch = batches[order[(k - 1) % len(order)]]
            with only_grad_for(model, params):
                opt.zero_grad(set_to_none=True)
                loss = sequence_nll(model(**model_inputs(batch)).logits, batch["labels"]).mean()
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
            counter["tokens"] += int(batch["attention_mask"].sum())

        def snapshot():
            return [p.detach().clone() for p in params]

        @torch.no_grad()
        def restore(snap):
            for p, s in zip(params, snap):
                p.copy_(s)

        info = {
            "param_scope": cfg.param_scope,
            "parameters_updated": int(sum(p.numel() for p in params)),
            "_tokens": lambda: counter["tokens"],
        }
        return step, snapshot, restore, info

    # ------------------------------------------------------------------------------------------- influence
    def _influence(self, model, tokenizer, request, forget, retain) -> dict[str, float]:
        cfg = self.config
        n = cfg.influence_examples
        f = forget.select(range(min(n, len(forget))))
        r = retain.select(range(min(n, len(retain)))) if retain is not None else None
        kw = dict(max_length=cfg.max_length, template=cfg.template)
        act_f = activation_scores(model, tokenizer, request, f, layer=cfg.influence_layer, **kw)
        train = concatenate_datasets([f, r]) if r is not None else f
        cols = [c for c in train.column_names if c in (UID, "question", "answer", "text")]
        train = train.select_columns(cols)
        lissa = lissa_scores(
            model,
            tokenizer,
            request,
            train,
            train,
            damping=cfg.lissa_damping,
            scale=cfg.lissa_scale,
            iterations=cfg.lissa_iterations,
            batch_size=cfg.lissa_batch_size,
            positions=cfg.update_positions,
            seed=cfg.seed,
            **kw,
        )
        out = {"activation_forget": float(act_f.mean()), "lissa_forget": float(lissa[: len(f)].mean())}
        if r is not None:
            act_r = activation_scores(model, tokenizer, request, r, layer=cfg.influence_layer, **kw)
            out.update(activation_retain=float(act_r.mean()), lissa_retain=float(lissa[len(f) :].mean()))
        return out


__all__ = [
    "EmbeddingGA",
    "EmbeddingGAConfig",
    "example_texts",
    "fuzzy_match",
    "mean_nll",
    "resolve_store",
    "untie_embeddings",
]
