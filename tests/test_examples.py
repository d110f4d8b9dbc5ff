"""Run the gallery examples in ``examples/`` and the README's quick start.

Each script runs as a subprocess with a headless matplotlib backend, in an empty
working directory with its own ``TMPDIR``, so the tests also check that it writes
no file there and removes the temporary files it creates.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("plot_*.py"))
# Figures an example saves into $SKLEARN_KSPARSE_FIGURE_DIR when it is set.
SAVED_FIGURES = {"plot_decoder_atoms.py": {"decoder_atoms.png"}}

# Runs the example as ``__main__`` and prints how many figures it left open;
# with the Agg backend ``plt.show()`` closes none of them.
RUNNER = """
import runpy
import sys

import matplotlib.pyplot as plt

runpy.run_path(sys.argv[1], run_name="__main__")
print(f"open figures: {len(plt.get_fignums())}")
"""


def example_environment(tmp_path):
    """Return the environment of an example run, with its folders under tmp_path."""
    env = os.environ.copy()
    env["MPLBACKEND"] = "Agg"
    env["TMPDIR"] = str(tmp_path / "tmp")
    env["SKLEARN_KSPARSE_FIGURE_DIR"] = str(tmp_path / "figures")
    # The examples fit small models whose matrix products gain little from BLAS
    # threads, and one thread per run avoids oversubscribing shared cores.
    # A value already set in the environment wins.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_example(path, tmp_path):
    """Run one example file and return the completed process."""
    return run_python(["-c", RUNNER, str(path)], tmp_path)


def run_python(arguments, tmp_path):
    """Run Python with ``arguments`` in tmp_path/workdir; return the process."""
    for name in ("workdir", "tmp", "figures"):
        (tmp_path / name).mkdir()
    process = subprocess.run(
        [
            sys.executable,
            "-W",
            "error::FutureWarning",
            "-W",
            "error::DeprecationWarning",
            *arguments,
        ],
        cwd=tmp_path / "workdir",
        env=example_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return process


def test_examples_folder_lists_gallery_examples():
    names = {path.name for path in EXAMPLES}
    expected = {
        "plot_decoder_atoms.py",
        "plot_grid_search_k.py",
        "plot_sparsity_tradeoff.py",
        "plot_tabular_codes.py",
    }
    assert expected <= names
    assert (EXAMPLES_DIR / "README.txt").is_file()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_headless(path, tmp_path):
    process = run_example(path, tmp_path)

    assert process.returncode == 0, process.stderr[-5000:]
    figure_lines = [
        line for line in process.stdout.splitlines() if line.startswith("open figures")
    ]
    assert figure_lines, process.stdout[-2000:]
    assert int(figure_lines[-1].split(":")[1]) >= 1
    assert sorted((tmp_path / "workdir").iterdir()) == []
    assert sorted((tmp_path / "tmp").iterdir()) == []
    saved = {figure.name for figure in (tmp_path / "figures").iterdir()}
    assert SAVED_FIGURES.get(path.name, set()) <= saved
    for name in saved:
        assert (tmp_path / "figures" / name).stat().st_size > 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_has_gallery_layout(path):
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()

    assert lines[0] == '"""'
    # A sphinx-gallery title: text between two lines of "=" at least as long.
    assert set(lines[1]) == {"="}
    assert lines[2].strip()
    assert set(lines[3]) == {"="}
    assert len(lines[1]) >= len(lines[2])
    assert "\n# %%\n" in source
    assert "plt.show()" in source


def readme_quick_start():
    """Return the first Python code block of the README's "Quick start" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_quick_start_runs(tmp_path):
    code = readme_quick_start()
    assert len(code.splitlines()) <= 15

    process = run_python(["-c", code], tmp_path)

    assert process.returncode == 0, process.stderr[-5000:]
    best_line, shape_line = process.stdout.strip().splitlines()[-2:]
    best_params = ast.literal_eval(best_line.rsplit(" ", 1)[0])
    assert best_params["ksparseautoencoder__k"] in (4, 8, 16)
    assert 0.5 < float(best_line.rsplit(" ", 1)[1]) <= 1.0
    assert shape_line.startswith("(1797, 128) ")
    assert 1 <= int(shape_line.split()[-1]) <= best_params["ksparseautoencoder__k"]
    assert sorted((tmp_path / "workdir").iterdir()) == []
