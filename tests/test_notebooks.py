"""The notebooks run top to bottom on a fresh install, and are committed without outputs."""
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REAL_WEIGHTS

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
BANNER = "Generated random weights, not ImageNet's"


def test_the_three_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == ["01_classify.ipynb", "02_transfer_learning.ipynb", "03_features.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [number for number, cell in enumerate(notebook.cells, 1)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them (jupyter nbconvert --clear-output --inplace)"
    # nbformat 4.5 gives every cell an id; without, Jupyter and nbformat warn on every open.
    missing = [number for number, cell in enumerate(json.loads(path.read_text())["cells"], 1) if "id" not in cell]
    assert not missing, f"{path.name}: cells {missing} have no id (nbformat.validator.normalize adds them)"


@pytest.fixture(scope="session")
def notebook_cache(tmp_path_factory):
    """One cache for all notebooks, so the generated weights are written once."""
    return tmp_path_factory.mktemp("notebook_cache")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_runs_top_to_bottom(path, tmp_path, monkeypatch, notebook_cache):
    monkeypatch.setenv("ALEXFT_CACHE", str(notebook_cache))  # the kernel inherits this environment
    monkeypatch.delenv("ALEXFT_DATA", raising=False)
    if REAL_WEIGHTS:
        monkeypatch.setenv("ALEXFT_WEIGHTS", REAL_WEIGHTS)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on the first failing cell

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells)
    # Every figure shown really reaches the notebook (e.g. no cell switched matplotlib to a file backend).
    for cell in code_cells:
        if "plt.show()" in cell.source or "display(Image" in cell.source:
            images = [output for output in cell.outputs if "image/png" in output.get("data", {})]
            assert images, f"{path.name}: no figure from the cell starting {cell.source[:60]!r}"
    shown = "".join(str(output.get("data", {}).get("text/markdown", "")) for cell in code_cells for output in cell.outputs)
    assert (BANNER in shown) == (not REAL_WEIGHTS), "the generated-weights banner must show exactly when the weights are not real"
    stderr = "".join(output.text for cell in code_cells for output in cell.outputs
                     if output.output_type == "stream" and output.name == "stderr")
    assert not re.search(r"^[IWE]\d{4} ", stderr, re.MULTILINE), f"TensorFlow start-up lines reached the notebook:\n{stderr[:500]}"


def test_each_notebook_writes_in_a_folder_of_its_own():
    """02 wrote 12 digits a class into work/digits and 03 15 into the same folder (write_digits
    adds to what is there): after 03, 02 trained on 150 images, and its "new digits, not used
    above" were among them, so it scored itself on images it had learned."""
    folders = {}
    for path in NOTEBOOKS:
        source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
        found = re.findall(r"^work = (.+?)\s*(?:#.*)?$", source, re.MULTILINE)
        if found:
            folders[path.name] = found
    assert set(folders) == {"02_transfer_learning.ipynb", "03_features.ipynb"}, folders
    assert all(len(found) == 1 for found in folders.values()), folders
    assert len({found[0] for found in folders.values()}) == len(folders), f"notebooks share a work folder: {folders}"
