"""Shared test set-up: offline Hugging Face stack, temp HF_HOME, small deterministic fixtures."""

import importlib.util
import os
import tempfile
from pathlib import Path

# Must be set before transformers / datasets / evaluate are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf_unlearn_test_home_"))
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: one thread is fastest, and avoids oversubscription

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def script():
    """Load a repository script (``"recipes/run.py"``, ``"benchmarks/run.py"``, ...) as a module, by path.

    By path, under a name made from it: several scripts are called ``run.py``, so a plain import could mix them up.
    """

    def load(relpath: str):
        name = "script_" + relpath.replace("/", "_").removesuffix(".py")
        spec = importlib.util.spec_from_file_location(name, REPO / relpath)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


def _qa_rows(n: int = 24) -> list[dict]:
    return [
        {
            "uid": f"u{i:03d}",
            "question": f"What is the secret code of item {i}?",
            "answer": f"The code of item {i} is K{(i * 7) % 13}R{i % 5}.",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def qa_rows() -> list[dict]:
    """24 small QA examples with uids u000..u023."""
    return _qa_rows()


@pytest.fixture(scope="session")
def qa_texts(qa_rows) -> list[str]:
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in qa_rows]


@pytest.fixture(scope="session")
def tiny_llama_trained(qa_rows, qa_texts):
    """A ~100k-parameter Llama-style model fine-tuned on qa_rows (session-cached; deep-copy before mutating)."""
    from hf_unlearn import finetune, tiny_causal_lm

    model, tok = tiny_causal_lm("llama", texts=qa_texts, vocab_size=400, hidden_size=48, num_layers=2, num_heads=4)
    out = finetune(model, tok, qa_rows, num_epochs=40, learning_rate=5e-3, batch_size=8)
    return out.model, tok
