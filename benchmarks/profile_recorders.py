"""Where the recorders' overhead goes: cProfile of one plain and one recorded fine-tune (benchmarks/recorders.py's
setting: tiny Llama 4 x 128, 128 examples, 3 epochs, batch 8, kappa 0.1). Prints each run's wall time and its top
functions by own time, so the same training ops (linear, backward, AdamW) can be compared between the two runs.

    python benchmarks/profile_recorders.py
"""

import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hf_unlearn.methods.embedding_ga.recorder import EmbeddingGradientRecorder
from hf_unlearn.methods.partial.recorder import AmnesiacRecorder
from hf_unlearn.methods.rum.recorder import LearningEventRecorder
from hf_unlearn.models import tiny_causal_lm
from hf_unlearn.training import finetune

data = [
    {"uid": f"u{i}", "question": f"What is item {i} of the list?", "answer": f"It is number {i * 7 % 101}."}
    for i in range(128)
]
texts = [f"Question: {d['question']} Answer: {d['answer']}" for d in data]
m, tok = tiny_causal_lm("llama", texts=texts, num_layers=4, hidden_size=128, vocab_size=400)
st = {k: v.clone() for k, v in m.state_dict().items()}
work = Path(tempfile.mkdtemp())


def run(kind):
    m.load_state_dict(st)
    cbs = (
        []
        if kind == "plain"
        else [EmbeddingGradientRecorder(work / "e"), AmnesiacRecorder(work / "a", kappa=0.1), LearningEventRecorder()]
    )
    return finetune(m, tok, data, num_epochs=3, batch_size=8, callbacks=cbs, seed=0)


run("plain")  # warm-up, not profiled
for kind in ["plain", "recorded"]:
    profile = cProfile.Profile()
    profile.enable()
    result = run(kind)
    profile.disable()
    print(kind, result.wall_time)
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)
