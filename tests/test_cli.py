"""The hf-unlearn command line: help for every subcommand, listing, errors as messages (not tracebacks)."""

import json
import subprocess
import sys

import pytest

from hf_unlearn.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "hf_unlearn.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "hf-unlearn" in out.stdout and "demo" in out.stdout


@pytest.mark.parametrize("sub", _subcommands())
def test_each_subcommand_has_help(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        main([sub, "--help"])
    assert exc.value.code == 0
    assert "usage: hf-unlearn " + sub in capsys.readouterr().out


def test_core_subcommands_exist():
    assert {"methods", "demo", "finetune", "unlearn"} <= set(_subcommands())


def test_methods_json_lists_registry(capsys):
    import hf_unlearn

    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == hf_unlearn.list_methods()
    assert {r["name"]: r["exact"] for r in rows}["retrain"] is True


def test_unknown_method_is_a_clean_error(tmp_path, capsys, qa_rows):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in qa_rows[:3]))
    code = main(["unlearn", "--model", str(tmp_path / "missing"), "--forget", str(data), "--method", "nope"])
    assert code == 2
    assert "unknown unlearning method 'nope'" in capsys.readouterr().err


def test_unlearn_end_to_end_from_files(tmp_path, capsys, qa_rows, qa_texts):
    import hf_unlearn

    model, tok = hf_unlearn.tiny_causal_lm("gpt2", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)
    model.save_pretrained(tmp_path / "target")
    tok.save_pretrained(tmp_path / "target")
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in qa_rows))
    (tmp_path / "uids.txt").write_text("u001 u002\n")
    code = main(
        [
            "unlearn",
            "--model",
            str(tmp_path / "target"),
            "--train-data",
            str(data),
            "--forget-uids",
            str(tmp_path / "uids.txt"),
            "--method",
            "grad_diff",
            "--set",
            "num_epochs=1",
            "--set",
            "retain_loss=kl",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "grad_diff" and summary["n_forget"] == 2
    assert summary["config"]["retain_loss"] == "kl"
    assert (tmp_path / "out" / "config.json").exists() or (tmp_path / "out" / "adapter_config.json").exists()


def test_help_imports_no_heavy_library():
    """``hf-unlearn --help`` must start fast (it took 9.6 s): torch, transformers and datasets load lazily."""
    code = (
        "import sys, time; t = time.perf_counter(); from hf_unlearn.cli import build_parser; "
        "build_parser().format_help(); import hf_unlearn; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _saved_target(tmp_path, qa_texts):
    import hf_unlearn

    model, tok = hf_unlearn.tiny_causal_lm("gpt2", texts=qa_texts, vocab_size=300, hidden_size=32, num_layers=1)
    model.save_pretrained(tmp_path / "target")
    tok.save_pretrained(tmp_path / "target")
    return tmp_path / "target"


def test_cli_output_is_quiet_and_verbose_brings_details_back(tmp_path, capfd, qa_rows, qa_texts):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in qa_rows))
    (tmp_path / "uids.txt").write_text("u001 u002\n")
    target = _saved_target(tmp_path, qa_texts)
    capfd.readouterr()
    argv = ["unlearn", "--model", str(target), "--train-data", str(data), "--forget-uids", str(tmp_path / "uids.txt"),
            "--method", "grad_ascent", "--set", "num_epochs=1"]  # fmt: skip
    assert main(argv) == 0
    out, err = capfd.readouterr()
    for noise in ("{'loss'", "'train_runtime'", "Loading weights", "adding uids", "Map", "FutureWarning"):
        assert noise not in out + err, noise
    assert "unlearning: 100%" in err  # one labelled bar for the phase
    assert json.loads(out)["method"] == "grad_ascent"  # the result
    assert main(["-v", *argv]) == 0
    out, err = capfd.readouterr()
    assert "'train_runtime'" in out + err and "Loading weights" in err


def test_cli_divergence_is_an_error_and_nothing_is_saved(tmp_path, capsys, qa_rows, qa_texts):
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in qa_rows))
    (tmp_path / "uids.txt").write_text("u001 u002\n")
    target = _saved_target(tmp_path, qa_texts)
    code = main(["unlearn", "--model", str(target), "--train-data", str(data), "--forget-uids",
                 str(tmp_path / "uids.txt"), "--method", "grad_ascent", "--set", "learning_rate=1e6", "--output-dir",
                 str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "error: training diverged at step 1" in err and "not saved" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_demo_table_shows_the_gold_model_once():
    from hf_unlearn.pipeline import markdown_table

    gold = {"forget_nll": 3.0, "retain_nll": 2.0, "holdout_nll": 3.1, "unlearn_seconds": 17.0}
    rows = {
        "target": {"forget_nll": 1.0, "retain_nll": 1.5, "holdout_nll": 2.5, "unlearn_seconds": None},
        "gold (retrain)": gold,
        "retrain": {**gold, "peak_rss_mib": 1.0, "tokens": 10},  # the benchmark's retrain IS the gold fine-tune
        "ssd": {"forget_nll": 3.1, "retain_nll": 2.7, "holdout_nll": 3.3, "unlearn_seconds": 1.3},
    }
    table = markdown_table({"rows": rows})
    assert table.count("| gold (retrain) |") == 1 and "| retrain |" not in table and "| ssd |" in table
    rows["retrain"] = {**gold, "forget_nll": 2.9}  # a retrain that differs from the gold row is shown
    assert "| retrain | 2.900 |" in markdown_table({"rows": rows})


def test_demo_prints_the_gold_model_once(monkeypatch, capsys):
    import types

    import hf_unlearn.protocol as protocol

    gold_model = object()
    nll = {"forget_nll": 3.0, "retain_nll": 2.0, "holdout_nll": 3.1, "unlearn_seconds": 17.0}
    ev = {"mia": {"loss": {"auc": 0.5, "privleak": 0.0}}}

    def fake_run_protocol(setting, methods=None, out_dir=None, progress=True, evaluate=False):
        return {
            "rows": {"gold (retrain)": nll, "retrain": dict(nll), "npo": {**nll, "forget_nll": 4.0}},
            "evaluation": {"gold": ev, "target": ev, "retrain": ev, "npo": ev},
            "_results": {"retrain": types.SimpleNamespace(model=gold_model), "npo": types.SimpleNamespace(model=1)},
            "_context": types.SimpleNamespace(gold=gold_model),
            "total_seconds": 1.0,
        }

    monkeypatch.setattr(protocol, "run_protocol", fake_run_protocol)
    assert main(["demo", "--setting", "test", "--threads", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("| gold (retrain) |") == 1 and "| retrain |" not in out  # NLL table
    assert out.count("| gold |") == 2 and out.count("| npo |") == 3  # evaluation tables: gold once per table
