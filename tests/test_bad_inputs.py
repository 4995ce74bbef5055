"""A scripted battery of bad inputs across the Python API, the CLI and the recipes.

Every input must give a clear error that names the problem (a ValueError / KeyError / TypeError / OSError with a
telling message, or a CLI exit code 2 with a one-line message, never a traceback), before any training starts,
and leave nothing half-written behind (no output folder, no ``.tmp-*`` folders).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

import hf_unlearn
from hf_unlearn.cli import main

METHODS = hf_unlearn.list_methods()


@pytest.fixture(scope="module")
def env(tmp_path_factory, qa_rows, qa_texts):
    """A tiny model, its saved folder, data files (good and malformed) and a few non-folders."""
    root = tmp_path_factory.mktemp("bad_inputs")
    model, tok = hf_unlearn.tiny_causal_lm("llama", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in qa_rows))
    (root / "forget.jsonl").write_text("\n".join(json.dumps(r) for r in qa_rows[:2]))
    (root / "broken.jsonl").write_text('{"question": "Q?", "answer": "A."}\n{"question": broken\n')
    (root / "data.xyz").write_text("question,answer\n")
    (root / "afile").write_text("not a folder")
    (root / "uids.txt").write_text("u001 u002\n")
    (root / "not_a_model").mkdir()
    (root / "list.yaml").write_text("- 1\n- 2\n")
    return types.SimpleNamespace(model=model, tok=tok, rows=qa_rows, root=root)


def _unlearn(e, forget=None, method="grad_ascent", **kw):
    kw.setdefault("tokenizer", e.tok)
    return hf_unlearn.unlearn(e.model, e.rows[:2] if forget is None else forget, method=method, **kw)


# ------------------------------------------------------------------------------------------------ Python API
API_CASES = [
    ("unknown-method", lambda e: _unlearn(e, method="forget_all"), ValueError, "unknown unlearning method 'forget_a"),
    *[
        (f"misspelled-option-{m}", lambda e, m=m: _unlearn(e, method=m, learnig_rate=1e-3), KeyError,
         "'learnig_rate' (did you mean 'learning_rate'?)")
        for m in METHODS
        if "learning_rate" in hf_unlearn.get_method(m).config_cls.option_names()  # SSD trains nothing: no lr
    ],
    *[
        (f"misspelled-option-{m}", lambda e, m=m: _unlearn(e, method=m, max_lenght=64), KeyError,
         "'max_lenght' (did you mean 'max_length'?)")
        for m in METHODS
        if "learning_rate" not in hf_unlearn.get_method(m).config_cls.option_names()
    ],
    ("misspelled-config-dict", lambda e: _unlearn(e, config={"num_epoch": 1}), KeyError, "did you mean 'num_epochs'"),
    ("misspelled-method-arg", lambda e: _unlearn(e, method="retrain", base_modle=e.model), KeyError,
     "did you mean 'base_model'"),
    ("misspelled-dispatch-arg", lambda e: _unlearn(e, train_datset=e.rows), KeyError, "did you mean 'train_dataset'"),
    ("lr-zero", lambda e: _unlearn(e, learning_rate=0), ValueError, "learning_rate must be > 0"),
    ("lr-nan", lambda e: _unlearn(e, learning_rate=float("nan")), ValueError, "learning_rate must be a finite"),
    ("lr-inf", lambda e: _unlearn(e, learning_rate=float("inf")), ValueError, "learning_rate must be a finite"),
    ("lr-string", lambda e: _unlearn(e, learning_rate="fast"), ValueError, "learning_rate must be a number"),
    ("batch-zero", lambda e: _unlearn(e, batch_size=0), ValueError, "batch_size"),
    ("epochs-negative", lambda e: _unlearn(e, num_epochs=-1), ValueError, "num_epochs"),
    ("max-steps-zero", lambda e: _unlearn(e, max_steps=0), ValueError, "max_steps"),
    ("template", lambda e: _unlearn(e, template="fancy"), ValueError, "template must be one of"),
    ("growth-below-one", lambda e: _unlearn(e, max_weight_growth=0.5), ValueError, "max_weight_growth"),
    ("wrong-config-class", lambda e: _unlearn(e, method="npo", config=hf_unlearn.UnlearnConfig()), TypeError,
     "takes a NPOConfig"),
    ("bare-uid-string", lambda e: _unlearn(e, forget="u001", train_dataset=e.rows), ValueError,
     "forget='u001' is a single string"),
    ("bare-string", lambda e: _unlearn(e, forget="hello there"), ValueError, "no file or folder 'hello there'"),
    ("uids-without-train", lambda e: _unlearn(e, forget=["u001"]), ValueError, "train_dataset"),
    ("unknown-uid", lambda e: _unlearn(e, forget=["u999"], train_dataset=e.rows), KeyError, "unknown uid"),
    ("empty-forget", lambda e: _unlearn(e, forget=[]), ValueError, "empty"),
    ("forget-is-everything", lambda e: _unlearn(e, forget=[r["uid"] for r in e.rows], train_dataset=e.rows),
     ValueError, "the forget set equals the whole training set (all 24 examples"),
    ("retain-equals-forget", lambda e: _unlearn(e, retain=e.rows[:2], method="grad_diff"), ValueError,
     "every example of the retain set"),
    ("malformed-jsonl", lambda e: _unlearn(e, forget=str(e.root / "broken.jsonl")), ValueError,
     "broken.jsonl as json"),
    ("unsupported-file", lambda e: _unlearn(e, forget=str(e.root / "data.xyz")), ValueError, "unsupported file type"),
    ("list-of-ints", lambda e: _unlearn(e, forget=[1, 2]), ValueError, "must hold dicts"),
    ("int-source", lambda e: _unlearn(e, forget=42), ValueError, "unsupported data source of type int"),
    ("duplicate-uids", lambda e: _unlearn(e, forget=[e.rows[0], e.rows[0]]), ValueError, "duplicate uids"),
    ("split-unknown", lambda e: _unlearn(e, forget=DatasetDict(a=Dataset.from_list(e.rows[:2])), forget_split="b"),
     ValueError, "unknown split 'b'"),
    ("split-missing", lambda e: _unlearn(e, forget=DatasetDict(a=Dataset.from_list(e.rows[:2]),
                                                              b=Dataset.from_list(e.rows[2:4]))),
     ValueError, "several splits"),
    ("needs-retain", lambda e: _unlearn(e, method="grad_diff"), ValueError, "needs a retain set"),
    ("no-tokenizer", lambda e: _unlearn(e, tokenizer=None), ValueError, "tokenizer"),
    ("not-a-model", lambda e: hf_unlearn.unlearn(object(), e.rows[:2], tokenizer=e.tok), TypeError, "causal LM"),
    ("model-path-missing", lambda e: hf_unlearn.unlearn(str(e.root / "nope" / "model"), e.rows[:2]),
     FileNotFoundError, "nope/model does not exist"),
    ("model-name-missing", lambda e: hf_unlearn.unlearn("no_such_model_here", e.rows[:2]), FileNotFoundError,
     "'no_such_model_here' is not a local folder"),
    ("model-folder-empty", lambda e: hf_unlearn.unlearn(str(e.root / "not_a_model"), e.rows[:2]), ValueError,
     "not a model folder"),
    ("finetune-epochs-zero", lambda e: hf_unlearn.finetune(e.model, e.tok, e.rows, num_epochs=0), ValueError,
     "num_epochs must be > 0, got 0"),
    ("finetune-epochs-negative", lambda e: hf_unlearn.finetune(e.model, e.tok, e.rows, num_epochs=-2), ValueError,
     "num_epochs must be > 0"),
    ("finetune-lr-zero", lambda e: hf_unlearn.finetune(e.model, e.tok, e.rows, learning_rate=0), ValueError,
     "learning_rate"),
    ("finetune-batch-zero", lambda e: hf_unlearn.finetune(e.model, e.tok, e.rows, batch_size=0), ValueError,
     "batch_size"),
    ("finetune-max-steps-zero", lambda e: hf_unlearn.finetune(e.model, e.tok, e.rows, max_steps=0), ValueError,
     "max_steps"),
    ("save-to-a-file", lambda e: hf_unlearn.save_unlearned(
        types.SimpleNamespace(model=e.model, tokenizer=e.tok), e.root / "afile"), NotADirectoryError, "is a file"),
]  # fmt: skip


@pytest.mark.parametrize("case, call, exc, fragment", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(env, case, call, exc, fragment):
    before = sorted(p.name for p in env.root.iterdir())
    with pytest.raises(exc) as err:
        call(env)
    msg = str(err.value.args[0]) if isinstance(err.value, KeyError) else str(err.value)
    assert fragment in msg, msg
    assert len(msg.splitlines()) <= 3, msg  # a message, not a dump
    assert sorted(p.name for p in env.root.iterdir()) == before  # nothing written, no .tmp-* leftovers


# ------------------------------------------------------------------------------------------------ CLI
def _cli_unlearn(e, *extra):
    return ["unlearn", "--model", str(e.root / "model"), "--train-data", str(e.root / "train.jsonl"), *extra]


CLI_CASES = [
    ("model-missing", lambda e: ["unlearn", "--model", str(e.root / "missing"), "--forget",
                                 str(e.root / "forget.jsonl"), "--method", "grad_ascent"], "missing does not exist"),
    ("output-dir-is-file", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "uids.txt"), "--method",
                                                  "grad_ascent", "--output-dir", str(e.root / "afile")), "is a file"),
    ("output-dir-under-file", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "uids.txt"), "--method",
                                                     "grad_ascent", "--output-dir", str(e.root / "afile" / "x")),
     "is a file"),
    ("misspelled-set", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "uids.txt"), "--method", "grad_diff",
                                              "--set", "learnig_rate=1e-3"), "did you mean 'learning_rate'"),
    ("misspelled-config-file", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "uids.txt"), "--method", "npo",
                                                      "--set", "betta=0.2"), "did you mean 'beta'"),
    ("set-out-of-range", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "uids.txt"), "--method", "npo",
                                                "--set", "beta=0"), "beta"),
    ("uids-file-missing", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "nope.txt"), "--method",
                                                 "grad_ascent"), "nope.txt: no such file"),
    ("bare-uid-as-forget", lambda e: _cli_unlearn(e, "--forget", "u001", "--method", "grad_ascent"),
     "forget='u001' is a single string"),
    ("no-forget", lambda e: _cli_unlearn(e, "--method", "grad_ascent"), "name the examples to forget"),
    ("unknown-method", lambda e: _cli_unlearn(e, "--forget-uids", str(e.root / "uids.txt"), "--method", "nope"),
     "unknown unlearning method 'nope'"),
    ("forget-everything", lambda e: ["unlearn", "--model", str(e.root / "model"), "--forget",
                                     str(e.root / "train.jsonl"), "--train-data", str(e.root / "train.jsonl"),
                                     "--method", "grad_ascent"], "equals the whole training set"),
    ("malformed-data", lambda e: ["unlearn", "--model", str(e.root / "model"), "--forget",
                                  str(e.root / "broken.jsonl"), "--method", "grad_ascent"], "broken.jsonl as json"),
    ("finetune-output-is-file", lambda e: ["finetune", "--model", str(e.root / "model"), "--data",
                                           str(e.root / "train.jsonl"), "--output-dir", str(e.root / "afile")],
     "is a file"),
    ("finetune-malformed-data", lambda e: ["finetune", "--model", "tiny-llama", "--data", str(e.root / "broken.jsonl"),
                                           "--output-dir", str(e.root / "ft_out")], "broken.jsonl as json"),
    ("finetune-model-missing", lambda e: ["finetune", "--model", str(e.root / "nomodel"), "--data",
                                          str(e.root / "train.jsonl"), "--output-dir", str(e.root / "ft_out")],
     "nomodel does not exist"),
]  # fmt: skip


@pytest.mark.parametrize("case, argv, fragment", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(env, case, argv, fragment, capsys):
    before = sorted(p.name for p in env.root.iterdir())
    assert main(argv(env)) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in env.root.iterdir()) == before  # no output folder, no .tmp-* leftovers


ARGPARSE_CASES = [
    ("finetune-epochs-zero", ["--epochs", "0"], "--epochs: must be a finite number > 0, got 0"),
    ("finetune-epochs-negative", ["--epochs", "-1"], "--epochs: must be a finite number > 0"),
    ("finetune-epochs-text", ["--epochs", "three"], "--epochs: must be a number, got 'three'"),
    ("finetune-lr-inf", ["--learning-rate", "inf"], "--learning-rate: must be a finite number > 0"),
    ("finetune-batch-zero", ["--batch-size", "0"], "--batch-size: must be >= 1"),
]


@pytest.mark.parametrize("case, extra, fragment", ARGPARSE_CASES, ids=[c[0] for c in ARGPARSE_CASES])
def test_cli_bad_flag_values(env, case, extra, fragment, capsys):
    argv = ["finetune", "--model", "tiny-llama", "--data", str(env.root / "train.jsonl")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--output-dir", str(env.root / "ft_out"), *extra])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err
    assert not (env.root / "ft_out").exists()


def test_cli_set_without_equals_and_config_not_a_mapping(env):
    with pytest.raises(SystemExit, match="--set expects key=value, got 'lr'"):
        main(_cli_unlearn(env, "--forget-uids", str(env.root / "uids.txt"), "--method", "grad_ascent", "--set", "lr"))
    with pytest.raises(SystemExit, match="expected a mapping"):
        main(_cli_unlearn(env, "--forget-uids", str(env.root / "uids.txt"), "--method", "grad_ascent", "--config",
                          str(env.root / "list.yaml")))  # fmt: skip
    with pytest.raises(SystemExit, match="unknown setting 'nope'"):
        main(["demo", "--setting", "nope"])


# ------------------------------------------------------------------------------------------------ recipes
RECIPE_CASES = [
    ("epochs-text", ["--finetune.num_epochs", "fast"], ValueError, "finetune.num_epochs must be a number, got 'fast'"),
    ("epochs-zero", ["--finetune.num_epochs", "0"], ValueError, "finetune.num_epochs must be > 0"),
    ("lr-negative", ["--finetune.learning_rate", "-1e-3"], ValueError, "finetune.learning_rate must be > 0"),
    ("authors-float", ["--benchmark.n_authors", "2.5"], ValueError, "benchmark.n_authors must be an integer"),
    ("enabled-text", ["--evaluate.enabled", "sometimes"], ValueError, "evaluate.enabled must be true or false"),
    ("private-text", ["--push.private", "sometimes"], ValueError, "push.private must be true or false"),
    ("seed-text", ["--seed", "x"], ValueError, "seed must be an integer"),
    ("threads-text", ["--num_threads", "many"], ValueError, "num_threads must be an integer"),
    ("output-dir-number", ["--output_dir", "3"], ValueError, "output_dir must be a string"),
    ("section-not-mapping", ["--finetune", "3"], ValueError, "finetune must be a mapping"),
    ("forget-split", ["--benchmark.forget_split", "forget"], ValueError, "not a forget split name"),
    ("method-unknown", ["--method", "nope"], ValueError, "unknown unlearning method 'nope'"),
    ("method-config-misspelled", ["--method_config.learnig_rate", "1e-3"], KeyError, "did you mean 'learning_rate'"),
    ("method-config-type", ["--method_config.learning_rate", "abc"], ValueError,
     "method_config of 'npo': learning_rate must be a number, got 'abc'"),
    ("method-config-range", ["--method_config.beta", "-1"], ValueError, "beta must be > 0"),
    ("unknown-top-key", ["--modle.arch", "gpt2"], KeyError, "unknown recipe key"),
]  # fmt: skip


@pytest.mark.parametrize("case, overrides, exc, fragment", RECIPE_CASES, ids=[c[0] for c in RECIPE_CASES])
def test_recipe_bad_value_reported_before_training(script, case, overrides, exc, fragment):
    run = script("recipes/run.py")
    with pytest.raises(exc) as err:
        run.load_recipe(Path(run.__file__).parent / "baselines" / "npo.yaml", overrides)
    msg = str(err.value.args[0]) if isinstance(err.value, KeyError) else str(err.value)
    assert fragment in msg, msg


def test_battery_has_at_least_fifty_inputs():
    n = len(API_CASES) + len(CLI_CASES) + len(ARGPARSE_CASES) + 3 + len(RECIPE_CASES)
    assert n >= 50, n
