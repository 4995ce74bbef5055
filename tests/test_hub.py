"""save_unlearned / push_to_hub / model cards / CLI (push, ledger, certificate) on tiny models, offline."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import hf_unlearn
from hf_unlearn.hub import HubUnavailableError, check_hub_reachable, push_to_hub, save_unlearned, saved_model_hash
from hf_unlearn.ledger import Ledger, apply_request
from hf_unlearn.utils.hashing import uids_digest, weights_hash

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    from hf_unlearn.benchmarks.fictitious_authors import build

    return build(n_authors=5, seed=0)


@pytest.fixture(scope="module")
def base(bench, tmp_path_factory):
    """A tiny Llama and its tokenizer, also saved as a plain folder (the adapter's base)."""
    from hf_unlearn.pipeline import qa_corpus

    model, tok = hf_unlearn.tiny_causal_lm(
        "llama", texts=qa_corpus(bench["full"]), vocab_size=300, hidden_size=32, num_layers=2, num_heads=2
    )
    folder = tmp_path_factory.mktemp("base") / "base"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok, folder


def _forget_texts(ds) -> list[str]:
    return list(ds["question"]) + list(ds["answer"]) + list(ds["paraphrased_answer"])


@pytest.fixture(scope="module")
def saved(bench, base, tmp_path_factory):
    """A full-model result applied through the ledger and an adapter result, both saved; their logits."""
    model, tok, _ = base
    root = tmp_path_factory.mktemp("saved")
    forget = list(bench["forget10"]["uid"])
    kw = dict(method="grad_ascent", tokenizer=tok, train_dataset=bench["full"], max_steps=2, batch_size=4)
    led = Ledger(root / "ledger.db")
    rid = led.submit(forget, method="grad_ascent", requester="test", target=str(root / "full"))
    holder = {}

    def apply_fn(req):
        holder["res"] = hf_unlearn.unlearn(copy.deepcopy(model), req["uids"], **{**kw, "method": req["method"]})
        return holder["res"].model, {"timings": holder["res"].timings}

    before = weights_hash(model)
    rec = apply_request(led, rid, apply_fn, lambda m: save_unlearned(holder["res"], root / "full"), hash_before=before)
    res_full = holder["res"]
    res_lora = hf_unlearn.unlearn(
        copy.deepcopy(model), forget, lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}, **kw
    )
    save_unlearned(res_lora, root / "adapter", metrics={"forget_quality": 0.25}, gold_metrics={"forget_quality": 1.0})
    ids = tok(["Question: Where was Leona Oyelaran born?\nAnswer:", "Hello world"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = {name: r.model.eval()(**ids).logits for name, r in (("full", res_full), ("adapter", res_lora))}
    torch.save(
        {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"], **logits}, root / "expected.pt"
    )
    return {"root": root, "ledger": led, "rid": rid, "rec": rec, "full": res_full, "adapter": res_lora}


_LOADER = textwrap.dedent(
    """
    import sys
    sys.modules["hf_unlearn"] = None  # importing hf_unlearn now fails: the folders must load without it
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, base = sys.argv[1], sys.argv[2]
    exp = torch.load(f"{root}/expected.pt")
    tok = AutoTokenizer.from_pretrained(f"{root}/full")
    ids = tok(["Question: Where was Leona Oyelaran born?\\nAnswer:", "Hello world"], return_tensors="pt", padding=True)
    assert torch.equal(ids["input_ids"], exp["input_ids"]), "tokenizer differs"
    inputs = {"input_ids": exp["input_ids"], "attention_mask": exp["attention_mask"]}
    full = AutoModelForCausalLM.from_pretrained(f"{root}/full").eval()
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), f"{root}/adapter").eval()
    with torch.no_grad():
        assert torch.equal(full(**inputs).logits, exp["full"]), "full model logits differ"
        assert torch.equal(adapter(**inputs).logits, exp["adapter"]), "adapter logits differ"
    print("LOADED-WITHOUT-HF_UNLEARN")
    """
)


def test_saved_folders_load_without_hf_unlearn_with_identical_logits(saved, base, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(_LOADER)
    proc = subprocess.run(
        [sys.executable, str(script), str(saved["root"]), str(base[2])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),  # not the repo root: `import hf_unlearn` must not be satisfiable by accident
    )
    assert proc.returncode == 0 and "LOADED-WITHOUT-HF_UNLEARN" in proc.stdout, proc.stderr[-3000:]


def test_saved_folder_contents_card_metadata_and_ledger(saved, bench):
    root, res_full = saved["root"], saved["full"]
    full_files = {p.name for p in (root / "full").iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "hf_unlearn.json", "tokenizer.json"} <= full_files
    adapter_files = {p.name for p in (root / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "hf_unlearn.json"} <= adapter_files
    assert "model.safetensors" not in adapter_files  # an adapter folder, not the full model

    forget = bench["forget10"]
    meta = json.loads((root / "full" / "hf_unlearn.json").read_text())
    assert meta["method"] == "grad_ascent" and meta["save_format"] == "full" and meta["exact"] is False
    assert meta["forget_set"] == {"size": len(forget), "uids_sha256": uids_digest(forget["uid"])}
    assert meta["config"]["max_steps"] == 2 and meta["versions"]["torch"] == torch.__version__
    assert meta["model_sha256"] == weights_hash(res_full.model)
    ameta = json.loads((root / "adapter" / "hf_unlearn.json").read_text())
    assert ameta["save_format"] == "peft_adapter" and ameta["metrics"] == {"forget_quality": 0.25}

    from huggingface_hub import ModelCard

    card = ModelCard.load(root / "adapter" / "README.md")
    assert card.data.tags == ["hf_unlearn", "unlearning", "grad_ascent"] and card.data.library_name == "peft"
    assert "| forget quality" in card.text and "| 0.25 | 1 |" in card.text
    assert "arXiv 2210.01504" in card.text and uids_digest(forget["uid"]) in card.text
    blob = "".join((root / d / f).read_text() for d in ("full", "adapter") for f in ("README.md", "hf_unlearn.json"))
    assert [t for t in _forget_texts(forget) if t in blob] == []
    assert [u for u in forget["uid"] if u in blob] == []

    # the ledger saw the request through, and the folder holds the recorded "after" weights
    rec = saved["rec"]
    assert rec["status"] == "applied" and rec["hash_before"] != rec["hash_after"]
    assert saved_model_hash(root / "full") == rec["hash_after"]
    assert saved["ledger"].recover() == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == []


def test_push_dry_run_lists_exactly_the_folder_and_offline_fails_fast(saved, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "to_push"
    shutil.copytree(saved["root"] / "adapter", folder)
    (folder / "extra").mkdir()
    (folder / "extra" / "eval.json").write_text("{}")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    expected = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".git" not in p.parts
    )
    assert push_to_hub(folder, "me/unlearned", dry_run=True, quiet=True) == expected
    assert "extra/eval.json" in expected and ".git/HEAD" not in expected

    from hf_unlearn.cli import main

    assert main(["push", str(folder), "me/unlearned", "--dry-run"]) == 0
    printed = [ln.strip() for ln in capsys.readouterr().out.splitlines()[1:]]
    assert printed == expected
    # a result object is saved to a scratch folder first: the same file names as save_unlearned writes
    from_result = push_to_hub(saved["adapter"], "me/unlearned", dry_run=True, quiet=True)
    assert from_result == sorted(p.name for p in (saved["root"] / "adapter").iterdir())

    snapshot = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        push_to_hub(folder, "me/unlearned")
    assert time.perf_counter() - t0 < 5
    assert main(["push", str(folder), "me/unlearned"]) == 3
    assert "Nothing was uploaded" in capsys.readouterr().err

    # offline mode off but no route to the Hub: fail fast too, before any huggingface_hub retry loop
    import huggingface_hub.constants

    monkeypatch.setattr("hf_unlearn.hub._offline", lambda: False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    t0 = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="cannot reach"):
        push_to_hub(folder, "me/unlearned", private=True)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(HubUnavailableError):
        check_hub_reachable("http://127.0.0.1:9", timeout=2)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == snapshot  # nothing local changed
    with pytest.raises(ValueError, match="user/name"):
        push_to_hub(folder, "a/b/c", dry_run=True)
    with pytest.raises(FileNotFoundError):
        push_to_hub(tmp_path / "missing", "me/x", dry_run=True)


@pytest.mark.parametrize("method", hf_unlearn.list_methods())
def test_golden_model_card(method, script):
    regen = script("model_cards/regenerate.py")
    golden = REPO / "model_cards" / f"{method}.md"
    if not golden.exists():
        pytest.fail(f"registered method {method!r} has no golden card: run `python model_cards/regenerate.py`")
    rendered = regen.render_golden(method)
    assert rendered == golden.read_text(), (
        f"model_cards/{method}.md is out of date (template, paper table or {method}'s default config changed): "
        "review the diff and run `python model_cards/regenerate.py`"
    )
    assert f"- {method}\n" in rendered and "- hf_unlearn\n" in rendered and "- unlearning\n" in rendered


def test_cli_ledger_apply_and_certificate(bench, base, tmp_path, capsys):
    from hf_unlearn.cli import main

    _, _, base_dir = base
    model_dir = tmp_path / "model"
    shutil.copytree(base_dir, model_dir)
    data = tmp_path / "train.jsonl"
    bench["full"].to_json(str(data))
    forget = list(bench["forget01"]["uid"])
    db = str(tmp_path / "l.db")
    assert main(["ledger", "--ledger", db, "submit", "--uids", ",".join(forget), "--method", "grad_diff",
                 "--requester", "ticket-9", "--target", str(model_dir)]) == 0  # fmt: skip
    rid = capsys.readouterr().out.strip()
    assert rid.startswith("req-")
    assert main(["ledger", "--ledger", db, "list"]) == 0 and "received" in capsys.readouterr().out
    before = saved_model_hash(model_dir)
    code = main(["ledger", "--ledger", db, "apply", rid, "--model", str(model_dir), "--train-data", str(data),
                 "--set", "max_steps=2", "--set", "batch_size=4"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rec = json.loads(capsys.readouterr().out)
    assert rec["status"] == "applied" and rec["hash_after"] == saved_model_hash(model_dir) != before
    assert main(["ledger", "--ledger", db, "recover"]) == 0 and json.loads(capsys.readouterr().out) == []
    ev = tmp_path / "ev.json"
    ev.write_text(json.dumps({"forget_quality": 0.7, "mia": {"loss": {"auc": 0.52}}}))
    assert main(["ledger", "--ledger", db, "verify", rid, "--evidence", str(ev)]) == 0
    capsys.readouterr()
    assert main(["certificate", rid, "--ledger", db]) == 0
    cert = json.loads(capsys.readouterr().out)
    assert cert["request"]["status"] == "verified" and cert["evidence"]["unlearned"]["mia.loss.auc"] == 0.52
    assert main(["certificate", rid, "--ledger", db, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith(f"# Deletion certificate {rid}") and "approximate" in md
    assert [t for t in _forget_texts(bench["forget01"]) if t in md + json.dumps(cert)] == []
    # bad ids / missing ledger: clear errors, exit code 2
    assert main(["certificate", "req-nope", "--ledger", db]) == 2
    assert "no deletion request 'req-nope'" in capsys.readouterr().err
    assert main(["ledger", "--ledger", str(tmp_path / "none.db"), "list"]) == 2


# ------------------------------------------------------------------------------------------------ issue 19
def test_s3t_through_the_ledger_delete_certificate_retrain_and_errors(qa_rows, qa_texts, tmp_path, capsys):
    """Issue 19 items 3 and 8: an S3T folder is applied by `ledger apply` (delete), certified with the exact
    guarantee (dropped adapters, served prefixes), retrained as a recorded follow-up; corrupt folders and a wrong
    base give clear errors naming the path."""
    from hf_unlearn.certificate import make_certificate
    from hf_unlearn.cli import main
    from hf_unlearn.hub import s3t_folder_hash
    from hf_unlearn.methods.s3t import S3TConfig, S3TModel

    torch.set_num_threads(1)
    kw = dict(texts=qa_texts, num_layers=4, hidden_size=32, vocab_size=300)
    base, tok = hf_unlearn.tiny_causal_lm("llama", seed=0, **kw)
    base_dir, other_dir, folder = tmp_path / "base", tmp_path / "other", tmp_path / "s3t"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    hf_unlearn.tiny_causal_lm("llama", seed=1, **kw)[0].save_pretrained(other_dir)
    tok.save_pretrained(other_dir)
    cfg = S3TConfig(n_shards=2, n_slices=2, budget=1, num_epochs=1, learning_rate=1e-2, batch_size=8, max_length=48)
    S3TModel.from_training(base, tok, qa_rows, cfg).save_pretrained(folder)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in qa_rows))
    uid = qa_rows[3]["uid"]
    # independent reference: the same delete in memory on a copy of the folder
    shutil.copytree(folder, tmp_path / "ref")
    ref = S3TModel.from_pretrained(tmp_path / "ref", hf_unlearn.load_model(str(base_dir))[0])
    ref_report = ref.delete([uid], persist=False)
    db = str(tmp_path / "l.db")
    assert main(["ledger", "--ledger", db, "submit", "--uids", uid, "--method", "s3t"]) == 0
    rid = capsys.readouterr().out.strip()
    before = s3t_folder_hash(folder)
    # no base / a wrong base: clear errors; the request stays pending
    assert main(["ledger", "--ledger", db, "apply", rid, "--model", str(folder)]) == 2
    assert "pass the base model" in capsys.readouterr().err
    led = Ledger(db)
    # first use records the base fingerprint; afterwards another base is refused
    assert main(["ledger", "--ledger", db, "apply", rid, "--model", str(folder), "--base-model", str(base_dir)]) == 0
    rec = json.loads(capsys.readouterr().out)
    ch = rec["changes"]
    assert rec["status"] == "applied" and rec["hash_before"] == before != rec["hash_after"] == s3t_folder_hash(folder)
    assert ch["adapters_removed"] == sorted(ref_report["adapters_removed"]) and ch["adapters_removed"]
    assert ch["served"] == {str(j): c for j, c in ref.served().items()}
    assert ch["served_prefix_lengths"] == {str(j): n for j, n in ref.served_prefix_lengths().items()}
    assert ch["n_deleted"] == 1 and ch["delete_seconds"] < 1.0 and uid not in json.dumps(rec["changes"])
    assert sorted(p.name for p in (folder / "adapters").iterdir()) == sorted(ref.state["adapters"])
    cert = make_certificate(led, rid)
    assert cert["guarantee"] == "exact" and "adapters_removed" in cert["guarantee_explanation"]
    from hf_unlearn.certificate import certificate_markdown

    md = certificate_markdown(cert)
    assert ch["adapters_removed"][0] in md and "serves" in md
    # re-applying is refused without changing anything
    assert main(["ledger", "--ledger", db, "apply", rid, "--model", str(folder), "--base-model", str(base_dir)]) == 2
    assert "already applied" in capsys.readouterr().err and led.get(rid)["status"] == "applied"
    rid2 = led.submit([qa_rows[5]["uid"]], method="s3t")
    with pytest.raises(ValueError, match=f"{folder}.*another base model"):
        hf_unlearn.ledger.apply_s3t(led, rid2, folder, str(other_dir))
    assert led.get(rid2)["status"] == "received"
    # retrain: a recorded follow-up; the cut shard serves its full prefix again
    assert main(["ledger", "--ledger", db, "retrain", rid, "--model", str(folder), "--base-model", str(base_dir),
                 "--train-data", str(data)]) == 0  # fmt: skip
    fu = json.loads(capsys.readouterr().out)
    assert fu["kind"] == "retrain" and fu["status"] == "done" and fu["hash_after"] == s3t_folder_hash(folder)
    assert sorted(fu["details"]["retrained_adapters"]) and fu["hash_before"] == rec["hash_after"]
    assert set(fu["details"]["served_prefix_lengths"].values()) == {2}
    assert make_certificate(led, rid)["followups"][0]["kind"] == "retrain"
    # corrupt inventory / truncated adapter: errors name the path
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    inv = bad / "s3t_inventory.json"
    inv.write_text(inv.read_text()[:100])
    with pytest.raises(ValueError, match=f"{inv}.*corrupt or truncated"):
        hf_unlearn.ledger.apply_s3t(led, rid2, bad, str(base_dir))
    shutil.rmtree(bad)
    shutil.copytree(folder, bad)
    name = sorted(p for p in (bad / "adapters").iterdir() if p.is_dir())[0]
    (name / "adapter_model.safetensors").write_bytes(b"\x10")
    with pytest.raises(ValueError, match=f"adapter '{name.name}' is corrupt or truncated"):
        hf_unlearn.ledger.apply_s3t(led, rid2, bad, str(base_dir))
    assert led.get(rid2)["status"] == "received"


def test_tied_model_hash_recover_and_apply_after_crash_between_renames(bench, tmp_path, monkeypatch):
    """Issue 19 item 7: the hash of a tied GPT-2 equals the hash of its save_pretrained folder, so `recover` gives a
    real answer; after a crash between the two renames, `apply` restores the folder first and succeeds."""
    from hf_unlearn.hub import model_weights_hash
    from hf_unlearn.ledger import apply_unlearning
    from hf_unlearn.pipeline import qa_corpus
    from hf_unlearn.utils import atomic
    from hf_unlearn.utils.hashing import folder_weights_hash

    model, tok = hf_unlearn.tiny_causal_lm(
        "gpt2", texts=qa_corpus(bench["full"]), vocab_size=300, hidden_size=32, num_layers=1, num_heads=2
    )
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    assert model_weights_hash(model) == folder_weights_hash(folder) != weights_hash(model)
    led = Ledger(tmp_path / "l.db")
    kw = dict(train_dataset=bench["full"], max_steps=1, batch_size=4)
    rid = led.submit(list(bench["forget01"]["uid"]), method="grad_ascent", target=str(folder))
    real = atomic.os.replace
    calls = []

    def crash_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash between the two renames")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        apply_unlearning(led, rid, str(folder), **kw)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert not folder.exists() and led.get(rid)["status"] == "applying"
    report = led.recover()  # restores the old folder; it holds the recorded hash_before
    assert [(r["state"], r["action"]) for r in report] == [("not_saved", "apply")]
    # crash again, then apply directly: it restores the folder first instead of failing on a missing path
    calls.clear()
    monkeypatch.setattr(atomic.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        apply_unlearning(led, rid, str(folder), **kw)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert not folder.exists()
    rec = apply_unlearning(led, rid, str(folder), **kw)
    assert rec["status"] == "applied" and saved_model_hash(folder) == rec["hash_after"] != rec["hash_before"]
    with pytest.raises(FileNotFoundError, match="model folder .*nowhere.* does not exist"):
        apply_unlearning(led, led.submit(["x"], method="grad_ascent"), str(tmp_path / "nowhere"), **kw)


def test_push_rejects_bad_repo_ids_and_non_model_folders(saved, tmp_path):
    """Issue 19 item 8: push validates the repo id and the folder before anything else."""
    from hf_unlearn.cli import main

    for bad in ("", "a/b/c", "-me/x", "me/x--y", "me/x.git", "me/has space", "me/" + "x" * 97):
        with pytest.raises(ValueError, match="invalid repo id"):
            push_to_hub(saved["root"] / "full", bad, dry_run=True, quiet=True)
    junk = tmp_path / "notes"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=f"{junk}.*is not a model folder.*notes.txt"):
        push_to_hub(junk, "me/model", dry_run=True, quiet=True)
    assert main(["push", str(junk), "me/model", "--dry-run"]) == 2
    assert main(["push", str(saved["root"] / "full"), "me//x", "--dry-run"]) == 2
    assert push_to_hub(saved["root"] / "adapter", "me/model", dry_run=True, quiet=True)


def _cli_race(db: str, argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run `hf-unlearn` command lines as simultaneous real processes."""
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hf_unlearn.cli", *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for a in argvs
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


@pytest.mark.slow  # four CLI processes: ~2 min on a shared 2-core machine; tests/test_ledger.py races the same in 3 s
def test_cli_concurrent_ledger_applies_lose_nothing(bench, base, tmp_path):
    """Issue 19 item 1, as a user runs it: `hf-unlearn ledger apply` twice at once on one folder (real processes).
    Two requests: both land, the second one computed from the first one's result. One request twice: applied once,
    the other run is refused, and the request stays applied (never failed)."""
    _, _, base_dir = base
    model_dir = tmp_path / "model"
    shutil.copytree(base_dir, model_dir)
    data = tmp_path / "train.jsonl"
    bench["full"].to_json(str(data))
    db = str(tmp_path / "l.db")
    led = Ledger(db)
    uids = list(bench["forget10"]["uid"])
    r0 = led.submit(uids[:2], method="grad_ascent", target=str(model_dir))
    r1 = led.submit(uids[2:4], method="grad_ascent", target=str(model_dir))
    r2 = led.submit(uids[4:6], method="grad_ascent", target=str(model_dir))
    opts = ["--model", str(model_dir), "--train-data", str(data), "--set", "max_steps=1", "--set", "batch_size=4"]
    done = _cli_race(db, [["ledger", "--ledger", db, "apply", r, *opts] for r in (r0, r1)])
    assert [p.returncode for p in done] == [0, 0], [p.stderr.decode()[-2000:] for p in done]
    first, second = sorted((led.get(r) for r in (r0, r1)), key=lambda r: r["applied_at"])
    assert first["status"] == second["status"] == "applied"
    assert second["hash_before"] == first["hash_after"] != first["hash_before"]  # not both from the same model
    assert saved_model_hash(model_dir) == second["hash_after"]
    done = _cli_race(db, [["ledger", "--ledger", db, "apply", r2, *opts] for _ in range(2)])
    assert sorted(p.returncode for p in done) == [0, 2], [p.stderr.decode()[-2000:] for p in done]
    loser = [p for p in done if p.returncode == 2][0].stderr.decode()
    assert "already applied" in loser or "another process" in loser, loser
    rec = led.get(r2)
    assert rec["status"] == "applied" and rec["hash_before"] == second["hash_after"]
    assert "failed" not in [e["status"] for e in led.events(r2)]
