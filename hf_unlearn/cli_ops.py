"""``hf-unlearn push``, ``hf-unlearn certificate`` and ``hf-unlearn ledger``: argparse sub-commands over
:mod:`hf_unlearn.hub`, :mod:`hf_unlearn.certificate` and :mod:`hf_unlearn.ledger`.

Each ``add_*_subparser(subparsers)`` registers one sub-command on the ``add_subparsers()`` object of the main
parser and sets ``func`` (``args -> exit code``).

    hf-unlearn push OUT me/model --dry-run
    hf-unlearn ledger --ledger L.db submit --uids u1,u2 --method grad_diff --requester dpo@example.org
    hf-unlearn ledger --ledger L.db apply REQ --model OUT --train-data data.jsonl
    hf-unlearn ledger --ledger L.db apply REQ --model S3T_FOLDER --base-model BASE      # S3T: delete, milliseconds
    hf-unlearn ledger --ledger L.db retrain REQ --model S3T_FOLDER --base-model BASE --train-data data.jsonl
    hf-unlearn certificate REQ --ledger L.db --format markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_LEDGER = "hf_unlearn_ledger.db"


def _ledger_path(args: argparse.Namespace) -> str:
    return args.ledger or os.environ.get("HF_UNLEARN_LEDGER") or DEFAULT_LEDGER


def _open_ledger(args: argparse.Namespace, must_exist: bool = True, read_only: bool | None = None):
    from hf_unlearn.ledger import Ledger

    path = _ledger_path(args)
    if must_exist and not Path(path).exists():
        raise FileNotFoundError(f"no ledger at {path} (pass --ledger PATH or set HF_UNLEARN_LEDGER)")
    return Ledger(path, read_only=read_only)


def _read_json(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    return json.loads(Path(path).read_text())


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------------------------- push
def cmd_push(args: argparse.Namespace) -> int:
    from hf_unlearn.hub import HubUnavailableError, push_to_hub

    try:
        out = push_to_hub(
            args.folder,
            args.repo_id,
            private=not args.public,
            dry_run=args.dry_run,
            token=args.token,
            commit_message=args.commit_message,
        )
    except HubUnavailableError as err:
        print(f"hf-unlearn push: error: {err}", file=sys.stderr)
        return 3
    if not args.dry_run:
        print(out)
    return 0


def add_push_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """``hf-unlearn push FOLDER REPO_ID [--public] [--dry-run] [--token T] [--commit-message M]``."""
    p = subparsers.add_parser(
        "push",
        help="Upload a folder written by save_unlearned (adapter or model + card) to the Hugging Face Hub.",
        description="Upload an unlearned model folder to the Hub (create_repo + upload_folder). Fails fast, and "
        "changes nothing locally, when offline.",
    )
    p.add_argument("folder", help="A folder written by `hf-unlearn unlearn --output-dir` / save_unlearned.")
    p.add_argument("repo_id", help="Target repo, e.g. user/my-unlearned-model.")
    p.add_argument("--public", action="store_true", help="Create the repo public (default: private).")
    p.add_argument("--dry-run", action="store_true", help="Only list the files that would be uploaded.")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one).")
    p.add_argument("--commit-message", default=None)
    p.set_defaults(func=cmd_push)
    return p


# ---------------------------------------------------------------------------------------------------- certificate
def cmd_certificate(args: argparse.Namespace) -> int:
    from hf_unlearn.certificate import certificate_markdown, make_certificate, write_certificate

    led = _open_ledger(args, read_only=True)  # certificates never write: they work on a read-only ledger
    evaluation, gold = _read_json(args.evaluation), _read_json(args.gold_evaluation)
    if args.output_dir:
        paths = write_certificate(led, args.request_id, args.output_dir, evaluation, gold_evaluation=gold)
        _print_json({k: str(v) for k, v in paths.items()})
        return 0
    cert = make_certificate(led, args.request_id, evaluation, gold_evaluation=gold)
    if args.format == "markdown":
        print(certificate_markdown(cert))
    else:
        _print_json(cert)
    return 0


def add_certificate_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """``hf-unlearn certificate REQUEST_ID [--ledger L] [--evaluation E.json] [--format json|markdown]
    [--output-dir DIR]``."""
    p = subparsers.add_parser(
        "certificate",
        help="Emit the deletion certificate of a ledger request (JSON or markdown; hashes only, never text).",
    )
    p.add_argument("request_id", help="The request id (see `hf-unlearn ledger list`).")
    p.add_argument("--ledger", default=None, help=f"Ledger database (default $HF_UNLEARN_LEDGER or {DEFAULT_LEDGER}).")
    p.add_argument("--evaluation", default=None, help="JSON evaluation report of the unlearned model (evidence).")
    p.add_argument("--gold-evaluation", default=None, help="JSON evaluation report of the gold retrained model.")
    p.add_argument("--format", choices=("json", "markdown"), default="json", help="What to print.")
    p.add_argument("--output-dir", default=None, help="Write certificate-<id>.json and .md here instead.")
    p.set_defaults(func=cmd_certificate)
    return p


# ---------------------------------------------------------------------------------------------------- ledger
def _uids_from(args: argparse.Namespace) -> list[str]:
    uids: list[str] = []
    if args.uids:
        uids += [u.strip() for u in args.uids.split(",") if u.strip()]
    if args.uids_file:
        uids += [u.strip() for u in Path(args.uids_file).read_text().split() if u.strip()]
    if not uids:
        raise ValueError("give the uids to forget with --uids u1,u2 or --uids-file FILE")
    return uids


def cmd_ledger(args: argparse.Namespace) -> int:
    action = args.ledger_command
    if action is None:
        args.ledger_parser.print_help()
        return 0
    from hf_unlearn.ledger import ApplyConflictError

    reading = action in ("list", "show") or (action == "recover" and not args.resolve)
    led = _open_ledger(args, must_exist=action != "submit", read_only=True if reading else None)
    try:
        return _ledger_action(args, led, action)
    except (ApplyConflictError, TimeoutError, PermissionError) as err:
        print(f"hf-unlearn ledger {action}: error: {err}", file=sys.stderr)
        return 2


def _ledger_action(args: argparse.Namespace, led: Any, action: str) -> int:
    if action == "submit":
        rid = led.submit(
            _uids_from(args), method=args.method, requester=args.requester, reason=args.reason, target=args.target
        )
        print(rid)
    elif action == "list":
        rows = led.list(status=args.status)
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                print(
                    f"{r['request_id']}  {r['status']:<9} {r['method']:<20} {r['n_uids']:>5} uid(s)  {r['created_at']}"
                )
    elif action == "show":
        rec = led.get(args.request_id)
        rec["followups"] = led.followups(args.request_id)
        _print_json(rec)
    elif action == "recover":
        _print_json(led.recover(resolve=args.resolve))
    elif action == "verify":
        led.mark_verified(args.request_id, _read_json(args.evidence) or {})
        _print_json(led.get(args.request_id))
    elif action == "fail":
        led.mark_failed(args.request_id, args.error)
        _print_json(led.get(args.request_id))
    elif action == "purge-uids":
        print(json.dumps({"purged_uid_rows": led.purge_uids(args.request_id)}))
    elif action == "apply":
        from hf_unlearn.cli import _load_config_file, _parse_sets
        from hf_unlearn.ledger import apply_unlearning
        from hf_unlearn.registry import get_method

        method = (led.get(args.request_id) or {}).get("method")
        config_cls = get_method(method).config_cls if method else None  # --set typed by the method's config
        cfg = {**_load_config_file(args.config), **_parse_sets(args.set, config_cls)}
        rec = apply_unlearning(
            led,
            args.request_id,
            args.model,
            train_dataset=args.train_data,
            output_dir=args.output_dir,
            base_model=args.base_model,
            **cfg,
        )
        _print_json(rec)
    elif action == "retrain":
        from hf_unlearn.ledger import retrain_s3t

        if not args.train_data:
            raise ValueError("retrain needs the training examples: pass --train-data FILE")
        _print_json(retrain_s3t(led, args.request_id, args.model, args.base_model, args.train_data))
    return 0


def add_ledger_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """``hf-unlearn ledger [--ledger L] {submit,list,show,apply,retrain,recover,verify,fail,purge-uids} ...``."""
    p = subparsers.add_parser(
        "ledger",
        help="Record and process deletion requests (SQLite ledger: submit, apply, recover, list, ...).",
    )
    p.add_argument("--ledger", default=None, help=f"Ledger database (default $HF_UNLEARN_LEDGER or {DEFAULT_LEDGER}).")
    sub = p.add_subparsers(dest="ledger_command", metavar="ACTION")

    s = sub.add_parser("submit", help="Record a deletion request; prints its id.")
    s.add_argument("--uids", default=None, help="Comma-separated uids to forget.")
    s.add_argument("--uids-file", default=None, help="File of whitespace-separated uids.")
    s.add_argument("--method", required=True, help="The method that will apply it (see `hf-unlearn methods`).")
    s.add_argument("--requester", default=None, help="Who asked (email, ticket id...).")
    s.add_argument("--reason", default=None, help="Why (e.g. the legal basis).")
    s.add_argument("--target", default=None, help="The model folder the request applies to.")

    ls = sub.add_parser("list", help="List requests.")
    ls.add_argument("--status", default=None, help="received, applying, applied, verified or failed.")
    ls.add_argument("--json", action="store_true")

    sh = sub.add_parser("show", help="Show one request as JSON.")
    sh.add_argument("request_id")

    a = sub.add_parser("apply", help="Apply a pending request with its method and save the model atomically.")
    a.add_argument("request_id")
    a.add_argument("--model", required=True, help="Model folder / Hub id / smollm2-135m-offline.")
    a.add_argument("--train-data", default=None, help="The training data the uids refer to.")
    a.add_argument("--output-dir", default=None, help="Where to save (default: the request's target or --model).")
    a.add_argument("--config", default=None, help="YAML/JSON file of method config fields.")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override a config field (repeatable).")
    a.add_argument("--base-model", default=None, help="For an S3T folder: the base model folder it was trained on.")

    rt = sub.add_parser(
        "retrain", help="S3T: rebuild the stages cut by deletions, recorded as a follow-up of an applied request."
    )
    rt.add_argument("request_id")
    rt.add_argument("--model", required=True, help="The S3T folder (S3TModel.save_pretrained output).")
    rt.add_argument("--base-model", required=True, help="The base model folder it was trained on.")
    rt.add_argument("--train-data", default=None, help="The training examples (must hold every surviving uid).")

    r = sub.add_parser("recover", help="After a crash: report each pending request and whether its save landed.")
    r.add_argument("--resolve", action="store_true", help="Mark requests whose save landed as applied.")

    v = sub.add_parser("verify", help="Attach evaluation evidence to an applied request.")
    v.add_argument("request_id")
    v.add_argument("--evidence", required=True, help="JSON file (e.g. an `hf-unlearn evaluate` report).")

    f = sub.add_parser("fail", help="Mark a request failed.")
    f.add_argument("request_id")
    f.add_argument("--error", required=True)

    pu = sub.add_parser("purge-uids", help="Delete stored uids (hashes stay); default: of every finished request.")
    pu.add_argument("request_id", nargs="?", default=None)

    p.set_defaults(func=cmd_ledger, ledger_parser=p)
    return p
