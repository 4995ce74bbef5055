"""CONTRIBUTING.md's worked example (a method = one folder + its test) runs as written."""

import importlib
import re
import sys
from pathlib import Path

import pytest

import hf_unlearn.methods
from hf_unlearn import registry

DOC = Path(__file__).parents[1] / "CONTRIBUTING.md"


def _blocks() -> dict[str, str]:
    """The python blocks of CONTRIBUTING.md, keyed by the path in their first line (``# path``)."""
    out = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        first, _, _ = block.partition("\n")
        if first.startswith("# "):
            out[first[2:].strip()] = block
    return out


@pytest.fixture()
def example_method(tmp_path):
    blocks = _blocks()
    folder = tmp_path / "scaled_ascent"
    folder.mkdir()
    for path in ("hf_unlearn/methods/scaled_ascent/method.py", "hf_unlearn/methods/scaled_ascent/__init__.py"):
        (folder / Path(path).name).write_text(blocks[path])
    hf_unlearn.methods.__path__.append(str(tmp_path))  # as if the folder were in hf_unlearn/methods/
    try:
        importlib.import_module("hf_unlearn.methods.scaled_ascent")
        yield blocks["tests/test_scaled_ascent.py"]
    finally:
        hf_unlearn.methods.__path__.remove(str(tmp_path))
        registry._REGISTRY.pop("scaled_ascent", None)
        for name in [m for m in sys.modules if m.startswith("hf_unlearn.methods.scaled_ascent")]:
            del sys.modules[name]


def test_the_worked_example_registers_and_its_test_passes(example_method):
    spec = registry.get_method("scaled_ascent")
    assert spec.config_cls.__name__ == "ScaledAscentConfig" and spec.benchmark_defaults["num_epochs"] == 4
    namespace: dict = {}
    exec(compile(example_method, "tests/test_scaled_ascent.py", "exec"), namespace)
    tests = [f for n, f in namespace.items() if n.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        test()
    # the generic benchmark runner knows it without being told
    from hf_unlearn.protocol import builtin_runners

    assert builtin_runners()["scaled_ascent"].defaults == spec.benchmark_defaults
