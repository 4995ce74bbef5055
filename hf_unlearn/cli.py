"""``hf-unlearn``: a thin command line over the Python API. Every subcommand maps to one API call.

hf-unlearn methods                      # list registered methods
hf-unlearn demo                         # the protocol on the embedded benchmark (offline, CPU, minutes)
hf-unlearn finetune --model M --data D --output-dir OUT [--lora]
hf-unlearn unlearn --model M --forget F [--retain R | --train-data D] --method NAME --output-dir OUT
hf-unlearn evaluate / push / certificate / ledger (see each --help)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any


def _set_verbosity(verbose: bool) -> None:
    """Quiet by default (one progress bar per phase and the results); ``-v`` brings logs, bars and warnings back.

    Called after parsing (``--help`` never gets here, so it stays free of heavy imports); every command needs
    transformers and datasets anyway.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("hf_unlearn").setLevel(logging.INFO if verbose else logging.WARNING)
    import datasets
    import huggingface_hub.utils
    import transformers

    if verbose:
        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.enable_progress_bar()
        datasets.utils.logging.set_verbosity_warning()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
    else:  # no per-load "Loading weights", "adding uids", "Map" or download bars, no library chatter
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        datasets.utils.logging.set_verbosity(logging.CRITICAL)  # its parse errors come back as our one-line error
        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _check_output_dir(path: str | None, flag: str = "--output-dir") -> None:
    """Fail before any work when the output folder cannot be written (a file, or under a file)."""
    if not path:
        return
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file, not a folder: choose another output directory")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{flag} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise PermissionError(f"{flag} {path}: cannot write in {parent}")
            break


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(pairs: list[str] | None, config_cls: Any = None) -> dict[str, Any]:
    """``--set key=value`` pairs as typed values.

    Config fields (and their aliases, e.g. ``num_epochs``) are parsed by ``transformers.HfArgumentParser`` from the
    method's config dataclass (:meth:`hf_unlearn.config.ConfigBase.parse_overrides`), the same class a ``--config``
    file fills, so the two cannot drift apart; other keys (a method's extra arguments) are read as JSON, else text.
    """
    raw: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        raw[k.strip()] = v
    if config_cls is None:
        return {k: _parse_value(v) for k, v in raw.items()}
    names = set(config_cls.option_names())
    typed = config_cls.parse_overrides({k: v for k, v in raw.items() if k in names})
    return {**typed, **{k: _parse_value(v) for k, v in raw.items() if k not in names}}


def _load_config_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of config fields")
    return data


def cmd_methods(args: argparse.Namespace) -> int:
    from hf_unlearn.registry import method_summary

    rows = method_summary()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        kind = "exact" if r["exact"] else "approx"
        print(f"{r['name']:<{width}}  {kind:<6}  {r['config']:<24}  {r['paper'] or ''}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hf_unlearn.protocol import SETTINGS, markdown_table, run_protocol

    if args.setting not in SETTINGS:
        raise SystemExit(f"unknown setting {args.setting!r}; choose from {sorted(SETTINGS)}")
    _check_output_dir(args.output_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else None
    print(f"hf_unlearn demo: setting {args.setting!r} (embedded fictitious-authors benchmark, offline)", flush=True)
    report = run_protocol(
        args.setting, methods=methods, out_dir=args.output_dir, progress=not args.quiet, evaluate=args.evaluate
    )
    print()
    print(markdown_table(report))
    if args.evaluate and "evaluation" in report:
        from hf_unlearn.evaluation.report import markdown_report

        evaluation = report["evaluation"]
        retrain = report.get("_results", {}).get("retrain")
        if retrain is not None and retrain.model is getattr(report.get("_context"), "gold", None):
            # the benchmark's retrain IS the gold model: show it once (as "gold"), not also as a "retrain" row
            evaluation = {k: v for k, v in evaluation.items() if k != "retrain"}
        print(markdown_report(evaluation))
    print(f"total {report['total_seconds']:.1f}s" + (f"; results in {args.output_dir}" if args.output_dir else ""))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from hf_unlearn.models import load_model, tiny_causal_lm
    from hf_unlearn.training import finetune

    _check_output_dir(args.output_dir)
    if args.model.startswith("tiny-"):
        from hf_unlearn.benchmarks.corpus import qa_corpus
        from hf_unlearn.data import load_examples

        data = load_examples(args.data, split=args.split)
        model, tok = tiny_causal_lm(args.model.split("-", 1)[1], texts=qa_corpus(data))
    else:
        model, tok = load_model(args.model)
    out = finetune(
        model,
        tok,
        args.data,
        split=args.split,
        lora=True if args.lora else None,
        num_epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        disable_tqdm=False,
    )
    out.model.save_pretrained(args.output_dir)
    tok.save_pretrained(args.output_dir)
    print(json.dumps({"output_dir": args.output_dir, "train_loss": out.train_loss, "seconds": out.wall_time}))
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    import hf_unlearn

    _check_output_dir(args.output_dir)
    config_cls = hf_unlearn.get_method(args.method).config_cls  # ValueError naming the methods when unknown
    file_cfg = config_cls.resolve_aliases(_load_config_file(args.config))  # the same field names as --set's
    cfg = {**file_cfg, **_parse_sets(args.set, config_cls)}
    if args.forget is None and args.forget_uids is None:
        raise ValueError("name the examples to forget: --forget DATA or --forget-uids FILE (with --train-data)")
    forget: Any = args.forget
    if args.forget_uids:
        if not Path(args.forget_uids).is_file():
            raise FileNotFoundError(f"--forget-uids {args.forget_uids}: no such file (a file of uids)")
        forget = [u.strip() for u in Path(args.forget_uids).read_text().split() if u.strip()]
        if not forget:
            raise ValueError(f"--forget-uids {args.forget_uids} holds no uid")
    if "disable_tqdm" in config_cls.field_names():
        cfg.setdefault("disable_tqdm", False)  # one progress bar for the unlearning phase
    res = hf_unlearn.unlearn(
        args.model,
        forget,
        args.retain,
        method=args.method,
        train_dataset=args.train_data,
        forget_split=args.forget_split,
        retain_split=args.retain_split,
        **cfg,
    )
    if args.output_dir:
        try:
            from hf_unlearn.hub import save_unlearned

            save_unlearned(res, args.output_dir)
        except ImportError:
            res.model.save_pretrained(args.output_dir)
            res.tokenizer.save_pretrained(args.output_dir)
    print(res.to_json())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-unlearn", description="Machine unlearning for Hugging Face causal LMs.")
    p.add_argument("-v", "--verbose", action="store_true", help="Log progress at INFO level.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser("methods", help="List the registered unlearning methods.")
    m.add_argument("--json", action="store_true", help="Print JSON.")
    m.set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="Run the protocol on the embedded benchmark (offline, CPU).")
    d.add_argument("--setting", default="demo", help="demo (default), cpu-tiny, test, gpu-smollm2.")
    d.add_argument("--methods", default=None, help="Comma-separated method names (default: all).")
    d.add_argument("--output-dir", default=None, help="Write JSON and markdown results here.")
    d.add_argument(
        "--no-evaluate", dest="evaluate", action="store_false", help="Skip the full TOFU-style metric suite."
    )
    d.add_argument("--quiet", action="store_true", help="No progress bars.")
    d.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (tiny models run fastest on one; 0 = torch default)."
    )
    d.set_defaults(func=cmd_demo)

    f = sub.add_parser("finetune", help="Fine-tune a model on QA or text data (full or LoRA).")
    f.add_argument("--model", required=True, help="Hub id, local folder, smollm2-135m-offline, tiny-llama, tiny-gpt2.")
    f.add_argument("--data", required=True, help="Dataset: local file/folder or Hub id.")
    f.add_argument("--split", default=None)
    f.add_argument("--lora", action="store_true", help="Train a LoRA adapter instead of all weights.")
    f.add_argument("--epochs", type=_positive_float, default=3)
    f.add_argument("--learning-rate", type=_positive_float, default=5e-4)
    f.add_argument("--batch-size", type=_positive_int, default=8)
    f.add_argument("--output-dir", required=True)
    f.set_defaults(func=cmd_finetune)

    u = sub.add_parser("unlearn", help="Unlearn a forget set with a registered method and save the result.")
    u.add_argument("--model", required=True, help="Hub id, local model/adapter folder or smollm2-135m-offline.")
    u.add_argument("--forget", default=None, help="Forget set: local file/folder or Hub id.")
    u.add_argument("--forget-uids", default=None, help="File of uids (whitespace separated) to forget.")
    u.add_argument("--retain", default=None, help="Retain set: local file/folder or Hub id.")
    u.add_argument("--train-data", default=None, help="The training dataset (for uid lists / default retain).")
    u.add_argument("--forget-split", default=None)
    u.add_argument("--retain-split", default=None)
    u.add_argument("--method", required=True, help="A name from `hf-unlearn methods`.")
    u.add_argument("--config", default=None, help="YAML/JSON file of method config fields.")
    u.add_argument("--set", action="append", metavar="KEY=VALUE", help="Override a config field (repeatable).")
    u.add_argument("--output-dir", default=None, help="Save the unlearned model (adapter or full) here.")
    u.set_defaults(func=cmd_unlearn)

    for mod, fn in (
        ("hf_unlearn.evaluation.cli_entry", "add_evaluate_subparser"),
        ("hf_unlearn.cli_ops", "add_push_subparser"),
        ("hf_unlearn.cli_ops", "add_certificate_subparser"),
        ("hf_unlearn.cli_ops", "add_ledger_subparser"),
    ):
        _maybe_add(sub, mod, fn)
    return p


def _maybe_add(sub: Any, module: str, fn: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:  # optional pieces: only skip when the module itself is absent
        if err.name != module:
            raise
        return
    getattr(mod, fn)(sub)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm

        with warnings.catch_warnings(), logging_redirect_tqdm():  # log lines above the progress bars, not inside
            if not args.verbose:
                for category in (FutureWarning, DeprecationWarning):
                    warnings.filterwarnings("ignore", category=category)
            _set_verbosity(args.verbose)
            return int(args.func(args) or 0)
    except (ValueError, KeyError, TypeError, OSError, ImportError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and type(err).__name__ != "DivergenceError":
            raise  # an unexpected failure: keep its traceback
        if args.verbose:
            traceback.print_exc()
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        print(f"hf-unlearn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
