"""Learning-event memorization proxies, recorded for free during fine-tuning.

:class:`LearningEventRecorder` is a ``TrainerCallback`` for :func:`hf_unlearn.training.finetune` (or any
``UidTrainer``). Before each training micro-batch (``on_batch_begin``) it puts a forward hook on the model's output
layer (``lm_head``) that keeps the logits of the training forward pass; after the backward (``on_batch_end``) it turns
them into per-example statistics over the answer tokens (target-token confidence, max-confidence, negative entropy,
binary argmax accuracy, loss) and accumulates them per uid. No extra forward pass: the cost is one softmax over the
logits already computed.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm
    >>> from hf_unlearn.training import finetune
    >>> data = [{"uid": f"u{i}", "question": f"Q{i}?", "answer": f"A{i}."} for i in range(4)]
    >>> model, tok = tiny_causal_lm("llama", texts=["Question: Q1?\\nAnswer: A1."], num_layers=1, vocab_size=280)
    >>> rec = LearningEventRecorder()
    >>> _ = finetune(model, tok, data, num_epochs=2, batch_size=2, callbacks=[rec])
    >>> rec.counts["u0"], sorted(rec.scores("confidence")) == ["u0", "u1", "u2", "u3"]
    (2, True)
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback

from hf_unlearn.methods.rum.scores import LEARNING_EVENTS, MEMORIZATION_SIGN, ScoreResult, sequence_event_stats
from hf_unlearn.models import unwrap

_STATS = ("confidence", "max_confidence", "neg_entropy", "accuracy", "loss")


class LearningEventRecorder(TrainerCallback):
    """Accumulate per-uid learning events over the training forward passes.

    Attributes:
        sums: ``{stat: {uid: sum over the steps the uid was trained on}}`` of the raw statistics.
        counts: ``{uid: number of times the uid was trained on}``.
        seconds: time spent recording (the proxy's whole cost).
    """

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, float]] = {k: defaultdict(float) for k in _STATS}
        self._counts: dict[str, int] = defaultdict(int)
        self.seconds = 0.0
        self._handle: Any = None
        self._logits: torch.Tensor | None = None
        self._pending: list[tuple[int, list[str], torch.Tensor]] = []  # (optimizer step, uids, [5, B] values)

    # ------------------------------------------------------------------------------------------- trainer hooks
    def on_batch_begin(self, trainer: Any, model: Any, inputs: dict[str, Any], uids: list[str] | None) -> None:
        if uids is None:
            return
        head = unwrap(extract_model_from_parallel(model)).get_output_embeddings()
        if head is None:
            raise TypeError(f"{type(model).__name__} has no output embedding (lm_head) to hook")

        def keep(_module: Any, _args: Any, output: torch.Tensor) -> None:
            self._logits = output.detach()

        self._handle = head.register_forward_hook(keep)

    def on_batch_end(
        self, trainer: Any, model: Any, inputs: dict[str, Any], uids: list[str] | None, loss: Any
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if uids is None or self._logits is None:
            return
        t0 = time.perf_counter()
        with torch.no_grad():
            stats = sequence_event_stats(self._logits, inputs["labels"].to(self._logits.device))
            # kept on the device, one [5, B] tensor per micro-batch: no host sync and no per-example Python here
            values = torch.stack([stats[k].float() for k in _STATS])
        self._logits = None
        step = int(getattr(getattr(trainer, "state", None), "global_step", 0) or 0)
        self._pending.append((step, [str(u) for u in uids], values))
        self.seconds += time.perf_counter() - t0

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Move the pending records to the host once and, under data parallelism, gather every process's records.

        Each rank saw only its own micro-batches. A record is keyed by (optimizer step, uid): an example that the
        sampler padded a last batch with (accelerate's ``even_batches``) was seen on two ranks in the same step,
        and is counted once, as in a single-process run.
        """
        t0 = time.perf_counter()
        from accelerate import PartialState

        if PartialState().num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object([self._host_records()])  # one list per rank, in rank order
            seen: set[tuple[int, str]] = set()
            for part in parts:
                mine = {(step, uid) for step, uid, _ in part}
                self._add_records(r for r in part if (r[0], r[1]) not in seen)
                seen |= mine
        else:
            self._drain()
        self.seconds += time.perf_counter() - t0

    @property
    def sums(self) -> dict[str, dict[str, float]]:
        self._drain()
        return self._sums

    @property
    def counts(self) -> dict[str, int]:
        self._drain()
        return self._counts

    def _drain(self) -> None:
        if self._pending:
            self._add_records(self._host_records())

    def _add_records(self, records: Any) -> None:
        for _, uid, vals in records:
            if vals[-1] != vals[-1]:  # NaN loss: no answer token survived truncation
                continue
            self._counts[uid] += 1
            for k, v in zip(_STATS, vals):
                self._sums[k][uid] += v

    def _host_records(self) -> list[tuple[int, str, list[float]]]:
        if not self._pending:
            return []
        values = torch.cat([v for _, _, v in self._pending], dim=1).T.cpu().tolist()  # one device-to-host copy
        keys = [(step, uid) for step, uids, _ in self._pending for uid in uids]
        self._pending = []
        return [(step, uid, vals) for (step, uid), vals in zip(keys, values)]

    # ------------------------------------------------------------------------------------------------ results
    def events(self, name: str) -> dict[str, float]:
        """Raw event per uid: the mean over steps (``cumulative_loss``: the sum of the per-step losses)."""
        if name not in LEARNING_EVENTS:
            raise KeyError(f"unknown learning event {name!r}; valid: {list(LEARNING_EVENTS)}")
        if name == "cumulative_loss":
            return dict(self.sums["loss"])
        return {u: self.sums[name][u] / c for u, c in self.counts.items()}

    def scores(self, name: str) -> dict[str, float]:
        """Memorization score per uid (higher = more memorized): confidence-like events are negated."""
        return {u: MEMORIZATION_SIGN[name] * v for u, v in self.events(name).items()}

    def score_result(self, name: str) -> ScoreResult:
        return ScoreResult(name, self.scores(name), self.seconds, {"steps_per_uid": dict(self.counts)})

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": {k: dict(v) for k, v in self.sums.items()},
            "counts": dict(self.counts),
            "seconds": self.seconds,
        }

    def _add(self, sd: dict[str, Any]) -> None:
        for k, d in sd["sums"].items():
            for u, v in d.items():
                self._sums[k][u] += v
        for u, c in sd["counts"].items():
            self._counts[u] += c
        self.seconds = max(self.seconds, sd.get("seconds", 0.0))

    def save(self, path: str | Path) -> None:
        """Write the records as JSON (reload with :meth:`load`)."""
        Path(path).write_text(json.dumps(self.state_dict()))

    @classmethod
    def load(cls, path: str | Path) -> LearningEventRecorder:
        rec = cls()
        rec._add(json.loads(Path(path).read_text()))
        return rec
