"""Architecture rules that code review alone would miss (issue 16).

* Layers: utils, data, models, config < training, evaluation < methods < api < protocol, hub, ledger, cli. No module
  imports a higher layer (parsed with ``ast``, so a lazy import inside a function counts too).
* A method describes itself once: its class carries name, config class, paper, capabilities and the keyword
  arguments its ``unlearn`` takes, and ``register_method(Class)`` reads them.
* The protocol's generic runner drives any registered method, including one it has never heard of.
"""

import ast
import inspect
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

import hf_unlearn
from hf_unlearn.config import MethodConfig, UnlearnConfig
from hf_unlearn.registry import MethodSpec, Paper, get_method, register_method

ROOT = Path(hf_unlearn.__file__).parent

# the layer of each top-level module / sub-package of hf_unlearn (higher imports lower, never the reverse)
LAYERS = {
    "_version": 0,
    "utils": 0,
    "data": 0,
    "models": 0,
    "config": 0,
    "registry": 0,
    "result": 0,
    "benchmarks": 0,
    "training": 1,
    "evaluation": 1,
    "methods": 2,
    "api": 3,
    "protocol": 4,
    "pipeline": 4,
    "hub": 4,
    "ledger": 4,
    "certificate": 4,
    "model_card": 4,
    "cli": 6,  # the command line is a front end of the public API (it may `import hf_unlearn`)
    "cli_ops": 6,
}
PACKAGE_ROOT = 6  # `import hf_unlearn` / `from hf_unlearn import x`: the public API, above the library


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "hf_unlearn":
        return None
    return PACKAGE_ROOT if len(parts) == 1 else LAYERS.get(parts[1])


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (``from hf_unlearn import api`` is ``hf_unlearn.api``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "hf_unlearn" and node.level == 0:
            out += [(node.lineno, f"hf_unlearn.{a.name}" if a.name in LAYERS else "hf_unlearn") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _upward_imports(top: str) -> list[str]:
    bad = []
    files = sorted((ROOT / top).rglob("*.py")) if (ROOT / top).is_dir() else [ROOT / f"{top}.py"]
    mine = LAYERS[top]
    for path in files:
        for line, module in _imports(path):
            layer = _layer(module)
            if layer is not None and layer > mine:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
    return bad


def test_every_module_has_a_layer():
    names = {p.stem for p in ROOT.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert names <= set(LAYERS), f"give these a layer in tests/test_layering.py: {sorted(names - set(LAYERS))}"


@pytest.mark.parametrize("top", sorted(LAYERS))
def test_no_import_points_up_a_layer(top):
    bad = _upward_imports(top)
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    # the rule must be able to fail: a method module that imports the package root or the protocol is reported
    pkg = tmp_path / "methods" / "bad"
    pkg.mkdir(parents=True)
    (pkg / "method.py").write_text(
        "import torch\nfrom hf_unlearn.data import UID\n\ndef f():\n    import hf_unlearn\n"
        "    from hf_unlearn.protocol import run_protocol\n    from hf_unlearn import api\n"
    )
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert [b.split(" imports ")[1] for b in _upward_imports("methods")] == [
        "hf_unlearn",
        "hf_unlearn.protocol",
        "hf_unlearn.api",
    ]


# --------------------------------------------------------------------------------------- self-describing methods
METHODS = hf_unlearn.list_methods()


@pytest.mark.parametrize("name", METHODS)
def test_method_class_describes_itself(name):
    spec = get_method(name)
    cls = spec.method_cls
    assert cls.name == name and cls.config_cls is spec.config_cls
    assert issubclass(spec.config_cls, (UnlearnConfig, MethodConfig))  # a Trainer method or one that trains nothing
    assert isinstance(spec.paper, str) and spec.paper
    assert isinstance(spec.description, str) and len(spec.description) > 40
    assert spec.reference is None or (isinstance(spec.reference, Paper) and spec.reference.arxiv)
    # the declared unlearn arguments are exactly the ones its signature takes (what the dispatcher accepts)
    params = list(inspect.signature(cls.unlearn).parameters.items())[5:]  # after self, model, tokenizer, F, R
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    assert spec.unlearn_arguments == tuple(n for n, p in params if p.kind in kinds)
    if spec.needs_recording:  # a method that needs a recording says what records it
        assert "training_recorders" in vars(cls)


def test_register_method_reads_the_class():
    class Toy(get_method("grad_ascent").method_cls):
        name = "toy_from_class"

    try:
        assert register_method(Toy) is Toy
        spec = get_method("toy_from_class")
        assert spec == MethodSpec("toy_from_class", Toy.config_cls, Toy) and spec.paper == Toy.paper
        with pytest.raises(ValueError, match="already registered"):
            register_method(type("Other", (Toy,), {}))
        with pytest.raises(ValueError, match="lower-case identifier"):
            register_method(type("Bad", (Toy,), {"name": "Bad Name"}))
        with pytest.raises(ValueError, match="no `config_cls`"):
            register_method(type("NoCfg", (), {"name": "no_cfg"}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            register_method("toy_from_class", Toy.config_cls, Toy)  # the old form still works
        assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    finally:
        from hf_unlearn import registry

        registry._REGISTRY.pop("toy_from_class", None)


def test_a_new_method_gets_the_generic_runner(monkeypatch):
    """One class is all the protocol needs: defaults, bf16, overrides and benchmark_inputs reach ``unlearn``."""
    from hf_unlearn import api, registry
    from hf_unlearn.methods.base import UnlearningMethod
    from hf_unlearn.protocol import Context, Setting, builtin_runners

    class Toy(UnlearningMethod):
        name = "toy_generic"
        config_cls = get_method("grad_ascent").config_cls
        benchmark_defaults = {"num_epochs": 2, "learning_rate": 1e-3}

        @classmethod
        def training_recorders(cls, ctx):
            return ["a recorder"]

        @classmethod
        def benchmark_inputs(cls, ctx, config):
            config["num_epochs"] = 3
            return {"holdout": ctx.holdout, "extra": ctx.recorders["toy_generic"][0]}

    calls = []
    monkeypatch.setattr(api, "unlearn", lambda *a, **kw: calls.append((a, kw)) or SimpleNamespace(details={}))
    register_method(Toy)
    try:
        runner = builtin_runners()["toy_generic"]
        setting = Setting("x", bf16=True, max_length=33, method_overrides={"toy_generic": {"learning_rate": 5.0}})
        ctx = Context(setting=setting, bench={"forget10": "F", "retain90": "R", "holdout10": "H"}, tokenizer="tok",
                      base_model=None, target="model")  # fmt: skip
        ctx.recorders["toy_generic"] = runner.recorders(ctx)
        runner.run(ctx)
    finally:
        registry._REGISTRY.pop("toy_generic", None)
    ((args, kw),) = calls
    assert args == ("model", "F", "R") and runner.defaults == {"num_epochs": 2, "learning_rate": 1e-3}
    assert kw == {
        "method": "toy_generic",
        "tokenizer": "tok",
        "holdout": "H",
        "extra": "a recorder",
        "num_epochs": 3,
        "learning_rate": 5.0,
        "max_length": 33,
        "bf16": True,
    }


BENCH = {"forget10": "F", "retain90": "R", "holdout10": "H", "full": "D"}


@pytest.mark.parametrize(
    "method, expected",
    [
        # what each method's former hand-written runner passed (issue 16 keeps the behaviour)
        ("ssd", {"full_dataset": "D", "alpha": 10.0, "lambda_": 1.0, "batch_size": 32, "max_length": 64}),
        ("embedding_ga", {"holdout": "H", "recording": "rec-dir", "max_length": 64}),
        ("partial_amnesiac", {"recording": "amnesiac", "learning_rate": 1e-3, "batch_size": 8, "max_length": 64}),
        (
            "rum",
            {
                "recorder": "events",
                "holdout": "H",
                "num_epochs": 4,
                "learning_rate": 1e-3,
                "batch_size": 8,
                "score": "confidence",
                "epoch_over": "forget",
                "max_length": 64,
            },
        ),  # fmt: skip
        ("npo", {"holdout": "H", "num_epochs": 4, "learning_rate": 1e-3, "batch_size": 8, "max_length": 64}),
    ],
)
def test_declared_benchmark_inputs(monkeypatch, method, expected):
    from hf_unlearn import api
    from hf_unlearn.protocol import Context, Setting, builtin_runners

    calls = []
    monkeypatch.setattr(api, "unlearn", lambda *a, **kw: calls.append((a, kw)) or SimpleNamespace(details={}))
    # bf16 on: only the methods that declare benchmark_bf16 get it (the retrain-free ones and RUM run fp32)
    overrides = {"partial_amnesiac": {"kappa": 0.5}}  # a recorder option, not a config field: dropped
    setting = Setting("x", max_length=64, bf16=method == "npo", method_overrides=overrides)
    ctx = Context(setting=setting, bench=BENCH, tokenizer="tok", base_model=None, target="model")
    ctx.recorders = {
        "embedding_ga": [SimpleNamespace(output_dir="rec-dir")],
        "partial_amnesiac": ["amnesiac"],
        "rum": ["events"],
    }
    builtin_runners()[method].run(ctx)
    ((args, kw),) = calls
    assert args == ("model", "F", "R")
    assert kw == {"method": method, "tokenizer": "tok", **expected, **({"bf16": True} if method == "npo" else {})}
    if method == "rum":  # without a recording RUM falls back to the loss proxy
        ctx.recorders = {}
        builtin_runners()[method].run(ctx)
        assert calls[1][1]["score"] == "loss" and calls[1][1]["recorder"] is None


def test_split_naming_has_one_implementation():
    """``paired_splits`` is defined once (the benchmark's data module); the protocol re-exports that function."""
    from hf_unlearn.benchmarks import fictitious_authors
    from hf_unlearn.protocol import paired_splits, settings

    assert paired_splits is settings.paired_splits is fictitious_authors.paired_splits
    assert "def paired_splits" not in inspect.getsource(settings)


def test_retrained_rows_serves_each_declaring_method_after_its_retraining():
    """``Setting.retrained_rows`` adds "<method>-retrained" for a method whose class declares ``retrained_row``
    (S3T), after the method's own row; the default setting adds none."""
    import math
    from dataclasses import replace

    from hf_unlearn.protocol import SETTINGS, run_protocol

    assert SETTINGS["test"].retrained_rows is False and SETTINGS["demo"].retrained_rows is True
    report = run_protocol(replace(SETTINGS["test"], retrained_rows=True), methods=["s3t"], progress=False)
    rows = report["rows"]
    assert list(rows)[-2:] == ["s3t", "s3t-retrained"]
    assert math.isfinite(rows["s3t-retrained"]["forget_nll"]) and "error" not in rows["s3t-retrained"]
    assert rows["s3t-retrained"]["forget_nll"] != rows["s3t"]["forget_nll"]  # retrain() changed what serves
