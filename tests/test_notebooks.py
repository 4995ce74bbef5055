"""The notebooks in notebooks/ are executed end to end (issue 19 item 10): a cell that raises fails the test.

They run with nbclient in a ``python3`` kernel (the ``dev`` extra installs nbclient, nbformat and ipykernel). Without
them, the code cells run in order as one script in a fresh interpreter, so the notebooks are exercised either way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
HAVE_NBCLIENT = all(importlib.util.find_spec(m) for m in ("nbclient", "nbformat", "ipykernel"))


def _kernel_env(tmp_path: Path) -> dict[str, str]:
    """The kernel imports this checkout's hf_unlearn, offline, one thread, headless matplotlib."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "MPLBACKEND": "Agg",
        "TMPDIR": str(tmp_path),  # the notebooks write under tempfile.mkdtemp(): keep it inside pytest's tmp dir
    }


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
        if c["cell_type"] == "code"
    ]


def test_notebooks_exist_and_are_committed_without_outputs():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "s3t_walkthrough.ipynb"} <= names, names
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path.name
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                    f"{path.name}: commit notebooks without outputs (clear them before committing)"
                )
        assert not any(
            line.lstrip().startswith(("%", "!")) for src in _code_cells(path) for line in src.splitlines()
        ), f"{path.name}: no IPython magics or shell escapes (the cells must also run as plain Python)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    env = _kernel_env(tmp_path)
    if HAVE_NBCLIENT:
        import nbformat
        from nbclient import NotebookClient

        for k, v in env.items():
            monkeypatch.setenv(k, v)  # the kernel inherits this process's environment
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb, timeout=600, kernel_name="python3", allow_errors=False, resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()  # raises CellExecutionError naming the cell and the exception when a cell fails
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
        assert errors == []
        assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    else:
        script = tmp_path / f"{path.stem}.py"
        script.write_text("\n\n".join(_code_cells(path)) + "\n")
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, f"{path.name} failed (run as a script):\n{proc.stderr[-4000:]}"
