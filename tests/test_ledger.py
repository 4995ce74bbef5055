"""Deletion ledger, atomic folders and certificates: lifecycle, errors, crash safety (SIGKILL), concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_unlearn.certificate import certificate_markdown, make_certificate, verify_certificate, write_certificate
from hf_unlearn.ledger import Ledger, apply_request
from hf_unlearn.utils.atomic import atomic_folder, atomic_save, recover_folder
from hf_unlearn.utils.hashing import folder_weights_hash, uid_hash, uids_digest, weights_hash

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ hashing / atomic
def test_weights_hash_tracks_every_bit_and_name():
    sd = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(2, dtype=torch.bfloat16)}
    h = weights_hash(sd)
    assert h == weights_hash(dict(reversed(list(sd.items()))))  # order-independent
    bumped = {**sd, "b": sd["b"].clone()}
    bumped["b"][1, 2] = torch.nextafter(bumped["b"][1, 2], torch.tensor(100.0))  # one ulp
    assert weights_hash(bumped) != h
    assert weights_hash({"c": sd["b"], "a": sd["a"]}) != h  # renamed tensor
    assert weights_hash({**sd, "b": sd["b"].reshape(3, 2)}) != h  # same bytes, other shape
    lin = torch.nn.Linear(3, 2)
    assert weights_hash(lin) == weights_hash(lin.state_dict())
    with pytest.raises(TypeError, match="state dict"):
        weights_hash(42)
    assert uids_digest(["b", "a", "a"]) == uids_digest(["a", "b"]) != uids_digest(["a"])
    assert uid_hash("u1") != uid_hash("u2")


def test_atomic_folder_keeps_old_on_error_and_recovers_interrupted_swap(tmp_path):
    target = tmp_path / "model"
    atomic_save(target, lambda p: (p / "v.txt").write_text("old"))
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "v.txt").write_text("new")
            raise RuntimeError("boom while writing")
    assert (target / "v.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder left behind
    # simulate a crash between the two renames: the target moved aside, the new folder not yet in place
    os.replace(target, tmp_path / ".tmp-model.old-abc")
    (tmp_path / ".tmp-model-xyz").mkdir()
    assert recover_folder(target) == "restored"
    assert (target / "v.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ------------------------------------------------------------------------------------------------ ledger API
def test_ledger_lifecycle_errors_and_purge(tmp_path):
    led = Ledger(tmp_path / "sub" / "ledger.db")
    rid = led.submit(["u2", "u1", "u1"], method="grad_diff", requester="dpo@example.org", reason="erasure request")
    rec = led.get(rid)
    assert rec["status"] == "received" and rec["n_uids"] == 2 and rec["requester"] == "dpo@example.org"
    assert rec["uid_hashes"] == sorted([uid_hash("u1"), uid_hash("u2")])
    assert rec["uids_digest"] == uids_digest(["u1", "u2"])
    assert led.uids(rid) == ["u1", "u2"]
    assert [r["request_id"] for r in led.pending()] == [rid]

    with pytest.raises(ValueError, match="status is 'received'"):
        led.mark_verified(rid, {"mia_auc": 0.5})
    led.mark_applied(rid, {"adapters_deactivated": ["s0_q0_t2"]}, "a" * 64, "b" * 64)
    with pytest.raises(ValueError, match="status is 'applied'"):
        led.mark_applied(rid, {}, "a" * 64, "b" * 64)
    led.mark_verified(rid, {"forget_quality": 0.9})
    rec = led.get(rid)
    assert rec["status"] == "verified" and rec["changes"] == {"adapters_deactivated": ["s0_q0_t2"]}
    assert rec["evidence"] == {"forget_quality": 0.9} and rec["verified_at"] >= rec["applied_at"] >= rec["created_at"]
    with pytest.raises(ValueError, match="cannot mark failed"):
        led.mark_failed(rid, "too late")
    assert [e["status"] for e in led.events(rid)] == ["received", "applied", "verified"]

    bad = led.submit(["u9"], method="ssd")
    led.mark_failed(bad, RuntimeError("out of memory"))
    assert led.get(bad)["error"] == "RuntimeError: out of memory"
    assert [r["request_id"] for r in led.list(status="failed")] == [bad]
    assert led.pending() == []

    # bad ids and bad inputs raise clear errors
    for call in (
        lambda: led.get("req-nope"),
        lambda: led.uids("req-nope"),
        lambda: led.mark_applied("req-nope", {}, None, None),
        lambda: led.mark_verified("req-nope", {}),
        lambda: led.mark_failed("req-nope", "x"),
        lambda: make_certificate(led, "req-nope"),
    ):
        with pytest.raises(KeyError, match="no deletion request 'req-nope'"):
            call()
    with pytest.raises(ValueError, match="valid statuses"):
        led.list(status="done")
    with pytest.raises(ValueError, match="at least one uid"):
        led.submit([], method="ssd")
    with pytest.raises(ValueError, match="single string"):
        led.submit("u1", method="ssd")

    # the operator can purge the uids; hashes (and certificates) remain
    assert led.purge_uids() == 3
    with pytest.raises(LookupError, match="purged"):
        led.uids(rid)
    assert led.get(rid)["uid_hashes"] == sorted([uid_hash("u1"), uid_hash("u2")])
    assert led.integrity_check() == "ok"
    led.close()
    assert Ledger(tmp_path / "sub" / "ledger.db").get(rid)["status"] == "verified"  # durable across reopen


def _submit_many(path: str, worker: int, n: int) -> list[str]:
    led = Ledger(path)
    ids = []
    for i in range(n):
        rid = led.submit([f"w{worker}-u{i}", f"shared-{i % 7}"], method="npo", requester=f"worker{worker}")
        if i % 3 == 0:
            led.mark_applied(rid, {"step": i}, "0" * 64, f"{i:064d}")
        ids.append(rid)
    led.close()
    return ids


def test_concurrent_writers_do_not_corrupt(tmp_path):
    path = str(tmp_path / "ledger.db")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_submit_many, [(path, w, 50) for w in range(4)])
    ids = [r for chunk in results for r in chunk]
    led = Ledger(path)
    assert led.integrity_check() == "ok"
    assert len(ids) == len(set(ids)) == len(led) == 200
    for w, chunk in enumerate(results):
        for i, rid in enumerate(chunk):
            rec = led.get(rid)
            assert rec["requester"] == f"worker{w}" and led.uids(rid) == sorted([f"shared-{i % 7}", f"w{w}-u{i}"])
            assert rec["status"] == ("applied" if i % 3 == 0 else "received")
    assert len(led.pending()) == 4 * 33
    assert len(led.events()) == 200 + 4 * 17


# ------------------------------------------------------------------------------------------------ crash safety
_CHILD = textwrap.dedent(
    """
    import os, sys, time, types
    pkg = types.ModuleType("hf_unlearn"); pkg.__path__ = [os.path.join({repo!r}, "hf_unlearn")]
    sys.modules["hf_unlearn"] = pkg  # import the ledger without the heavy package __init__ (fast start)
    import torch
    from safetensors.torch import save_file
    from hf_unlearn.ledger import Ledger, apply_request
    from hf_unlearn.utils import atomic

    db, target, rid, kill_at, marker = sys.argv[1:6]

    def hang(point):
        if point == kill_at:
            open(marker, "w").write(point)
            time.sleep(600)

    def apply_fn(req):
        hang("apply")
        return {{"a.w": torch.full((4,), 2.0), "b.w": torch.full((4,), 2.0)}}, {{"entries_dampened": 8}}

    def save_fn(sd):
        def write(tmp):
            save_file({{"a.w": sd["a.w"]}}, str(tmp / "a.safetensors"))
            hang("save")
            save_file({{"b.w": sd["b.w"]}}, str(tmp / "b.safetensors"))
        atomic.atomic_save(target, write)
        hang("after_save")

    real_replace, calls = os.replace, []
    def replace(src, dst):
        calls.append(1)
        if len(calls) == 2:
            hang("swap")
        return real_replace(src, dst)
    atomic.os.replace = replace

    led = Ledger(db)
    apply_request(led, rid, apply_fn, save_fn, hash_before={hash_before!r})
    print("done")
    """
)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "kill_at, landed", [("apply", False), ("save", False), ("swap", False), ("after_save", True), (None, True)]
)
def test_sigkill_while_applying_leaves_old_or_new_state(tmp_path, kill_at, landed):
    old = {"a.w": torch.ones(4), "b.w": torch.ones(4)}
    target = tmp_path / "model"

    def write(sd):
        return lambda tmp: [save_file({k: sd[k]}, str(tmp / f"{k[0]}.safetensors")) for k in ("a.w", "b.w")]

    atomic_save(target, write(old))
    old_files = _files(target)
    new = {"a.w": torch.full((4,), 2.0), "b.w": torch.full((4,), 2.0)}
    led = Ledger(tmp_path / "ledger.db")
    rid = led.submit(["u1", "u2"], method="ssd", target=str(target))
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(repo=str(REPO), hash_before=weights_hash(old)))
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "ledger.db"), str(target), rid, str(kill_at), str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if kill_at is None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    else:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "child never reached the kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    # restart: a fresh ledger object, as after a crash
    led = Ledger(tmp_path / "ledger.db")
    assert led.integrity_check() == "ok"
    report = led.recover(resolve=True)
    rec = led.get(rid)
    if kill_at is None:
        assert report == [] and rec["status"] == "applied"
    else:
        assert [r["request_id"] for r in report] == [rid]
        expected_state = {"apply": "not_started", "save": "not_saved", "swap": "not_saved", "after_save": "saved"}
        assert report[0]["state"] == expected_state[kill_at]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == []  # no half folders left
    files = _files(target)
    if landed:
        assert files != old_files and folder_weights_hash(target) == weights_hash(new) == rec["hash_after"]
        assert rec["status"] == "applied" and rec["changes"] == {"entries_dampened": 8}
    else:
        assert files == old_files and folder_weights_hash(target) == weights_hash(old)
        assert rec["status"] in ("received", "applying")
        # resume: applying the pending request again completes it
        rec = apply_request(
            led, rid, lambda req: (new, {"entries_dampened": 8}), lambda sd: atomic_save(target, write(sd))
        )
        assert rec["status"] == "applied" and folder_weights_hash(target) == rec["hash_after"] == weights_hash(new)


def test_apply_request_failure_is_recorded_and_model_untouched(tmp_path):
    target = tmp_path / "m"
    atomic_save(target, lambda p: save_file({"w": torch.zeros(2)}, str(p / "model.safetensors")))
    led = Ledger(tmp_path / "l.db")
    rid = led.submit(["u1"], method="ssd")

    def broken_save(sd):
        with atomic_folder(target) as tmp:
            save_file(sd, str(tmp / "model.safetensors"))
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        apply_request(led, rid, lambda r: ({"w": torch.ones(2)}, {}), broken_save, model={"w": torch.zeros(2)})
    rec = led.get(rid)
    assert rec["status"] == "failed" and "disk full" in rec["error"]
    assert folder_weights_hash(target) == weights_hash({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="only pending"):
        apply_request(led, rid, lambda r: ({"w": torch.ones(2)}, {}), broken_save)


# ------------------------------------------------------------------------------------------------ certificates
def test_certificate_has_hashes_evidence_and_no_forget_text(tmp_path):
    from hf_unlearn.benchmarks.fictitious_authors import build

    bench = build(n_authors=5, seed=0)
    forget = bench["forget10"]
    led = Ledger(tmp_path / "l.db")
    rid = led.submit(list(forget["uid"]), method="grad_diff", requester="ticket-17", reason="author opted out")
    led.mark_applied(rid, {"steps": 4, "note": forget["answer"][0]}, "a" * 64, "b" * 64)
    evaluation = {
        "forget_quality": 0.42,
        "mia": {"min_k": {"auc": 0.55, "privleak": -4.0}},
        "splits": {"forget": {"per_item": {u: {"generation": a} for u, a in zip(forget["uid"], forget["answer"])}}},
        "notes": [forget["question"][0]],
    }
    led.mark_verified(rid, {"evaluation": evaluation, "gold": {"forget_quality": 1.0}})
    cert = make_certificate(led, rid, versions={"hf_unlearn": "0.1.0"}, issued_at="2025-01-01T00:00:00+00:00")
    assert cert["method"] == {"name": "grad_diff", "exact": False, "paper": cert["method"]["paper"]}
    assert cert["guarantee"] == "approximate" and cert["request"]["requester"] == "ticket-17"
    assert cert["forget_set"]["uid_hashes"] == sorted(uid_hash(u) for u in forget["uid"])
    assert cert["weights"] == {**cert["weights"], "hash_before": "a" * 64, "hash_after": "b" * 64, "changed": True}
    assert cert["evidence"]["unlearned"] == {
        "forget_quality": 0.42,
        "mia.min_k.auc": 0.55,
        "mia.min_k.privleak": -4.0,
    }
    assert cert["evidence"]["gold"] == {"forget_quality": 1.0}
    assert verify_certificate(cert)
    tampered = json.loads(json.dumps(cert))
    tampered["guarantee"] = "exact"
    assert not verify_certificate(tampered)

    paths = write_certificate(led, rid, tmp_path / "certs")
    md = paths["markdown"].read_text()
    blob = json.dumps(cert) + md + paths["json"].read_text() + certificate_markdown(cert)
    assert "0.42" in md and uid_hash(forget["uid"][0]) in md and "ticket-17" in md
    texts = list(forget["question"]) + list(forget["answer"]) + list(forget["paraphrased_answer"])
    leaked = [t for t in texts if t in blob]
    assert leaked == []
    assert all(u not in blob for u in forget["uid"])  # uids appear only hashed

    exact_id = led.submit(["u1"], method="retrain")
    led.mark_applied(exact_id, {"retrained_on": 9}, "a" * 64, "b" * 64)
    assert make_certificate(led, exact_id)["guarantee"] == "exact"  # exact: applied is enough


def test_certificates_only_for_applied_requests(tmp_path):
    """Issue 19 item 2: received / applying / failed requests (and unverified approximate ones) get no certificate."""
    from hf_unlearn.certificate import CertificateError

    led = Ledger(tmp_path / "l.db")
    received = led.submit(["u1"], method="retrain")
    applying = led.submit(["u2"], method="retrain")
    led.mark_applying(applying, {}, "a" * 64, "b" * 64)
    failed = led.submit(["u3"], method="retrain")
    led.mark_failed(failed, "boom")
    unverified = led.submit(["u4"], method="npo")
    led.mark_applied(unverified, {}, "a" * 64, "b" * 64)
    for rid, status in ((received, "received"), (applying, "applying"), (failed, "failed"), (unverified, "applied")):
        with pytest.raises(CertificateError, match=f"{rid}.*status is '{status}'"):
            make_certificate(led, rid)
        with pytest.raises(ValueError, match="status is"):
            write_certificate(led, rid, tmp_path / "certs")
    assert not (tmp_path / "certs").exists()
    led.mark_verified(unverified, {"forget_quality": 0.9})
    assert make_certificate(led, unverified)["request"]["status"] == "verified"


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def test_verify_evidence_stores_only_numbers_and_purge_scrubs_text(tmp_path):
    """Issue 19 item 6a: the ledger DB (and its WAL) never holds generated text; purge removes any text left."""
    from hf_unlearn.benchmarks.fictitious_authors import build

    forget = build(n_authors=5, seed=0)["forget10"]
    texts = list(forget["question"]) + list(forget["answer"])
    led = Ledger(tmp_path / "db" / "l.db")
    rid = led.submit(list(forget["uid"]), method="grad_diff")
    led.mark_applied(rid, {"steps": 4}, "a" * 64, "b" * 64)
    report = {
        "forget_quality": 0.42,
        "mia": {"loss": {"auc": 0.55}},
        "splits": {"forget": {"per_item": {u: {"generation": a} for u, a in zip(forget["uid"], forget["answer"])}}},
        "generations": list(forget["answer"]),
        forget["question"][0]: 1.0,  # text as a key
    }
    led.mark_verified(rid, {"evaluation": report, "gold": {"forget_quality": 1.0, "sample": forget["answer"][1]}})
    assert led.get(rid)["evidence"] == {
        "evaluation": {"forget_quality": 0.42, "mia.loss.auc": 0.55},
        "gold": {"forget_quality": 1.0},
    }
    blob = _all_bytes(tmp_path / "db")
    assert [t for t in texts if t.encode() in blob] == []

    # text that reached the ledger by other paths (API changes, error messages quoting uids) is purged
    other = led.submit(list(forget["uid"][:2]), method="grad_diff")
    led.mark_applied(other, {"note": forget["answer"][0], "n": 3}, "a" * 64, "c" * 64)
    led.mark_failed(other, KeyError(f"unknown uid {forget['uid'][0]}: {forget['question'][1]}"))
    led.close()
    led = Ledger(tmp_path / "db" / "l.db")
    assert led.purge_uids() == len(forget) + 2
    assert led.get(other)["changes"] == {"note": "<text omitted>", "n": 3}
    led.close()
    blob = _all_bytes(tmp_path / "db")
    leaked = [t for t in texts + list(forget["uid"]) if t.encode() in blob]
    assert leaked == []
    led = Ledger(tmp_path / "db" / "l.db")
    assert led.get(other)["error"] == "KeyError: <message removed by purge-uids>" and led.integrity_check() == "ok"


def test_ledger_file_errors_and_read_only_listing(tmp_path):
    """Issue 19 item 8: corrupt / non-SQLite / read-only ledgers give clear errors; listing and certificates work
    read-only; an unknown method at submit lists the valid ones."""
    from hf_unlearn.cli import main
    from hf_unlearn.ledger import LedgerError

    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database, just text " * 200)
    with pytest.raises(LedgerError, match="junk.db.*not a usable SQLite ledger"):
        Ledger(junk)
    db = tmp_path / "ro" / "l.db"
    led = Ledger(db)
    rid = led.submit(["u1"], method="retrain")
    with pytest.raises(
        ValueError, match="unknown unlearning method 'grad_difff'.*grad_diff.*Did you mean 'grad_diff'"
    ):
        led.submit(["u1"], method="grad_difff")
    led.mark_applied(rid, {"n": 1}, "a" * 64, "b" * 64)
    led.close()
    truncated = tmp_path / "trunc.db"
    truncated.write_bytes(db.read_bytes()[:1500])
    with pytest.raises(LedgerError, match="trunc.db"):
        Ledger(truncated).list()
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LedgerError, match="not a hf_unlearn ledger"):
        Ledger(other, read_only=True)
    os.chmod(db, 0o444)
    os.chmod(db.parent, 0o555)
    try:
        ro = Ledger(db, read_only=os.geteuid() == 0 or None)  # root ignores file modes: ask for read-only then
        assert ro.read_only and [r["request_id"] for r in ro.list()] == [rid]
        assert make_certificate(ro, rid)["request"]["request_id"] == rid
        with pytest.raises(LedgerError, match="read-only"):
            ro.submit(["u2"], method="retrain")
        assert main(["ledger", "--ledger", str(db), "list"]) == 0
        assert main(["certificate", rid, "--ledger", str(db)]) == 0
        if os.geteuid() != 0:
            assert main(["ledger", "--ledger", str(db), "submit", "--uids", "u3", "--method", "retrain"]) == 2
        assert main(["ledger", "--ledger", str(junk), "list"]) == 2
        assert main(["ledger", "--ledger", str(tmp_path / "x.db"), "submit", "--uids", "u3", "--method", "nop"]) == 2
    finally:
        os.chmod(db.parent, 0o755)
        os.chmod(db, 0o644)


_RACER = textwrap.dedent(
    """
    import os, sys, time, types
    pkg = types.ModuleType("hf_unlearn"); pkg.__path__ = [os.path.join({repo!r}, "hf_unlearn")]
    sys.modules["hf_unlearn"] = pkg
    import torch
    from safetensors.torch import load_file, save_file
    from hf_unlearn.ledger import ApplyConflictError, Ledger, apply_request
    from hf_unlearn.utils.hashing import folder_weights_hash

    db, target, rid, go = sys.argv[1:5]
    while not os.path.exists(go):  # start together
        time.sleep(0.005)
    led = Ledger(db)
    state = {{}}

    def hash_before():
        state["sd"] = load_file(os.path.join(target, "model.safetensors"))
        return folder_weights_hash(target)

    def apply_fn(req):
        time.sleep(0.5)  # a slow unlearning step: the other process runs meanwhile
        sd = dict(state["sd"])
        for u in req["uids"]:
            sd[u] = torch.zeros(2)
        return sd, {{"zeroed": req["uids"]}}

    def write(sd, folder):
        save_file(sd, str(folder / "model.safetensors"))

    try:
        rec = apply_request(led, rid, apply_fn, target=target, write_fn=write, hash_before=hash_before,
                            disk_hash_fn=folder_weights_hash)
        print("APPLIED", rec["hash_before"], rec["hash_after"])
    except (ApplyConflictError, ValueError) as err:
        print("REFUSED", err)
    """
)


def _race(tmp_path: Path, rids: list[str]) -> list[str]:
    script = tmp_path / "racer.py"
    script.write_text(_RACER.format(repo=str(REPO)))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "l.db"), str(tmp_path / "model"), rid, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for rid in rids
    ]
    time.sleep(0.5)
    go.write_text("go")
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        outs.append(out.decode().strip())
    return outs


def _race_setup(tmp_path: Path, uids: list[str]) -> tuple[Ledger, dict[str, torch.Tensor]]:
    sd = {u: torch.ones(2) for u in uids}
    atomic_save(tmp_path / "model", lambda p: save_file(sd, str(p / "model.safetensors")))
    return Ledger(tmp_path / "l.db"), sd


def test_concurrent_applies_to_one_folder_both_land(tmp_path):
    """Issue 19 item 1: two requests applied at once to one folder (real processes) both end up on disk."""
    from safetensors.torch import load_file

    led, _ = _race_setup(tmp_path, ["u00", "u01"])
    target = str(tmp_path / "model")
    r0, r1 = (led.submit([u], method="ssd", target=target) for u in ("u00", "u01"))
    outs = _race(tmp_path, [r0, r1])
    assert all(o.startswith("APPLIED") for o in outs), outs
    final = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert torch.equal(final["u00"], torch.zeros(2)) and torch.equal(final["u01"], torch.zeros(2))  # none lost
    recs = sorted((led.get(r) for r in (r0, r1)), key=lambda r: r["applied_at"])
    assert recs[0]["hash_before"] != recs[1]["hash_before"]  # the second started from the first one's result
    assert recs[1]["hash_before"] == recs[0]["hash_after"]
    assert folder_weights_hash(tmp_path / "model") == recs[1]["hash_after"]


def test_concurrent_applies_of_one_request_apply_once_and_never_fail_it(tmp_path):
    """Issue 19 item 1: the loser of two applies of one request is refused; the request stays applied."""
    led, _ = _race_setup(tmp_path, ["u00"])
    rid = led.submit(["u00"], method="ssd", target=str(tmp_path / "model"))
    outs = _race(tmp_path, [rid, rid])
    assert sorted(o.split()[0] for o in outs) == ["APPLIED", "REFUSED"], outs
    assert "already applied" in [o for o in outs if o.startswith("REFUSED")][0]
    rec = led.get(rid)
    assert rec["status"] == "applied" and rec["error"] is None
    assert [e["status"] for e in led.events(rid)] == ["received", "applying", "applied"]
    # a later apply is refused with the status named, and does not flip it either
    with pytest.raises(ValueError, match="is 'applied'"):
        apply_request(led, rid, lambda r: ({}, {}), lambda m: None)
    assert led.get(rid)["status"] == "applied"
