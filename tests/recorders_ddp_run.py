"""Fine-tune a tiny model with all three recorders attached: run by tests/test_recorders_ddp.py under 1 or 2 processes.

Usage: ``python tests/recorders_ddp_run.py OUT GRAD_ACCUM`` (1 process) or
``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 tests/recorders_ddp_run.py OUT 1``. Both see the same global
batches (per-device batch 2; 1 process accumulates 2 micro-batches per step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from hf_unlearn.methods.embedding_ga.recorder import EmbeddingGradientRecorder
from hf_unlearn.methods.partial.recorder import AmnesiacRecorder
from hf_unlearn.methods.rum.recorder import LearningEventRecorder
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training import finetune


def main() -> None:
    out, accum = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    # uneven lengths, so that per-rank token counts differ (the loss normalisation across ranks matters)
    data = [{"uid": f"u{i}", "question": f"What is item {i}?", "answer": "red " * (1 + i % 4)} for i in range(16)]
    texts = [f"Question: {d['question']} Answer: {d['answer']}" for d in data]
    model, tok = tiny_causal_lm("gpt2", texts=texts, vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    rec_e = EmbeddingGradientRecorder(out / "egrads")
    rec_a = AmnesiacRecorder(out / "amnesiac", kappa=1.0, value_dtype="float32")
    rec_r = LearningEventRecorder()
    res = finetune(
        model, tok, data, num_epochs=2, batch_size=2, gradient_accumulation_steps=accum, learning_rate=1e-2,
        callbacks=[rec_e, rec_a, rec_r], seed=0,
    )  # fmt: skip
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        rec_r.save(out / "events.json")
        (out / "summary.json").write_text(json.dumps({"num_processes": state.num_processes, "steps": res.steps}))


if __name__ == "__main__":
    main()
