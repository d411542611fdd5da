"""The notebooks under ``notebooks/``: stripped in the repository, and each runs end to end.

Every notebook is executed with nbclient on the venv's ``python3`` kernel, with its parameters
unset, so it generates its own sample data and runs the pipeline on it. The kernel's home,
temporary, IPython, Jupyter, matplotlib and Dask folders all point below ``tmp_path``, and
``DASK_SCHEDULER_ADDRESS`` and the notebooks' own variables are removed from its environment.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120  # seconds per cell


def _code_cells(nb: Any) -> list[Any]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _outputs(nb: Any) -> list[Any]:
    return [output for cell in _code_cells(nb) for output in cell.outputs]


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for number, cell in enumerate(nb.cells):
        where = f"{path.name} cell {number}"
        assert "execution" not in cell.metadata, f"{where}: execution timings are not stripped"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where}: outputs are not stripped"
            assert cell.execution_count is None, f"{where}: execution count is not stripped"
    # every notebook starts with its parameters, read from the environment
    first = _code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", [])
    assert "MASK_PIPELINE_NOTEBOOK_" in first.source


@pytest.fixture(scope="session")
def kernel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``python3`` kernelspec running this interpreter (the venv's), written to a temporary
    folder rather than the user's home; returns the folder to put on ``JUPYTER_PATH``."""
    from ipykernel.kernelspec import write_kernel_spec

    jupyter_path = tmp_path_factory.mktemp("jupyter-path")
    write_kernel_spec(jupyter_path / "kernels" / "python3")  # argv: sys.executable -m ...
    return jupyter_path


@pytest.fixture
def notebook_env(tmp_path: Path, kernel_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for the kernel (inherited from this process): everything it writes lands
    below ``tmp_path``. Returns the kernel's temporary folder."""
    folders = {
        "HOME": "home",
        "TMPDIR": "tmp",
        "XDG_CACHE_HOME": "home/.cache",
        "XDG_CONFIG_HOME": "home/.config",
        "XDG_DATA_HOME": "home/.local/share",
        "IPYTHONDIR": "ipython",
        "MPLCONFIGDIR": "matplotlib",
        "JUPYTER_CONFIG_DIR": "jupyter/config",
        "JUPYTER_DATA_DIR": "jupyter/data",
        "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
        "DASK_TEMPORARY_DIRECTORY": "tmp",
    }
    for name, folder in folders.items():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(tmp_path / folder))
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.delenv("JUPYTER_PREFER_ENV_PATH", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    for name in [n for n in os.environ if n.startswith("MASK_PIPELINE_")]:
        monkeypatch.delenv(name)
    return tmp_path / "tmp"


def test_kernel_is_this_venv(kernel_path: Path, notebook_env: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.resource_dir).is_relative_to(kernel_path)
    assert spec.argv[0] == sys.executable


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, notebook_env: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError naming the cell when one fails

    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was displayed"
    # the notebook ran the pipeline into its own temporary folder, below tmp_path, and removed
    # that folder at the end
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    work = re.findall(
        rf"removed ({re.escape(str(notebook_env))}/mask-pipeline-notebook-\S+)", printed
    )
    assert len(work) == 1, printed
    assert "/results" in printed and work[0] in printed.split("removed")[0]
    assert not list(notebook_env.glob("mask-pipeline-notebook-*")), "temporary folder left"
    if "LocalCluster(" in "".join(cell.source for cell in _code_cells(nb)):
        assert "http://127.0.0.1:" in printed, "the dashboard link was not printed"
