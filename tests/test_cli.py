"""Tests of ``python -m sklearn_ksparse``, run as a subprocess on files in tmp_path."""

import errno
import io
import os
import re
import stat
import subprocess
import sys
import tempfile
import warnings
import zipfile

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from sklearn_ksparse import KSparseAutoencoder, _cli
from sklearn_ksparse._io import DataError, atomic_output, check_writable, open_table

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL_MODEL = ["--n-components", "16", "--k", "4", "--epochs", "3"]


def run_cli(*args, cwd):
    """Run the command line and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "sklearn_ksparse", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits().data[:300] / 16.0


def write_csv(path, X, header=True):
    names = ",".join(f"pixel{j}" for j in range(X.shape[1]))
    # 17 significant digits make the text round-trip to the same float64 values.
    np.savetxt(
        path, X, delimiter=",", fmt="%.17g", header=names if header else "", comments=""
    )
    return path


def test_no_arguments_runs_digits_demo(monkeypatch):
    calls = []
    monkeypatch.setattr(_cli, "run_digits_demo", lambda: calls.append(True))
    assert _cli.main([]) == 0
    assert calls == [True]


@pytest.mark.parametrize(
    "command, expected",
    [
        ("fit", ["--n-components", "--k", "--epochs", "MiB", "rows", "--quiet"]),
        ("transform", ["--model", "--output", "--chunk-rows", "save_npz"]),
    ],
)
def test_subcommand_help(tmp_path, command, expected):
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    for text in expected:
        assert text in result.stdout


def test_fit_then_transform_csv(tmp_path, digits):
    data = write_csv(tmp_path / "data.csv", digits)
    fitted = run_cli("fit", data, "--model", "model.joblib", *SMALL_MODEL, cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    assert "Saved to model.joblib" in fitted.stdout

    encoded = run_cli(
        "transform", data, "--model", "model.joblib", "--output", "codes.npz",
        cwd=tmp_path,
    )  # fmt: skip
    assert encoded.returncode == 0, encoded.stderr
    codes = sp.load_npz(tmp_path / "codes.npz")
    model = joblib.load(tmp_path / "model.joblib")
    assert isinstance(model, KSparseAutoencoder)
    assert model.n_features_in_ == 64
    assert codes.shape == (300, 16)
    assert codes.getnnz(axis=1).max() <= 4
    np.testing.assert_allclose(codes.toarray(), model.transform(digits).toarray())


def test_fit_without_data_uses_digits(tmp_path):
    result = run_cli("fit", "--model", "model.joblib", *SMALL_MODEL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    model = joblib.load(tmp_path / "model.joblib")
    assert model.n_features_in_ == 64
    assert model.n_iter_ == 3
    assert "1797 rows x 64 columns" in result.stdout


@pytest.mark.parametrize(
    "suffix",
    [
        ".npy",
        ".npz",
        "-sparse.npz",
        "-coo.npz",
        "-csc.npz",
        "-noheader.csv",
    ],
)
def test_transform_reads_each_format(tmp_path, digits, suffix):
    model = KSparseAutoencoder(16, k=4, max_iter=2, random_state=0).fit(digits)
    joblib.dump(model, tmp_path / "model.joblib")
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, digits)
    elif suffix == ".npz":
        np.savez(path, X=digits)
    elif suffix == "-sparse.npz":
        sp.save_npz(path, sp.csr_matrix(digits))
    elif suffix == "-coo.npz":
        sp.save_npz(path, sp.coo_matrix(digits))
    elif suffix == "-csc.npz":
        sp.save_npz(path, sp.csc_array(digits))
    else:
        write_csv(path, digits, header=False)

    status = _cli.main(
        ["transform", str(path), "--model", str(tmp_path / "model.joblib"),
         "--output", str(tmp_path / "codes.npz"), "--chunk-rows", "70"]
    )  # fmt: skip
    assert status == 0
    codes = sp.load_npz(tmp_path / "codes.npz")
    np.testing.assert_allclose(codes.toarray(), model.transform(digits).toarray())


def test_streamed_fit_reports_progress(tmp_path, digits):
    data = write_csv(tmp_path / "data.csv", digits)
    result = run_cli(
        "fit", data, "--model", "model.joblib", "--stream", "--chunk-rows", "100",
        *SMALL_MODEL, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(streamed)" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"epoch {epoch}/3, loss ")
        assert "elapsed" in line
        assert "remaining about" in line
    model = joblib.load(tmp_path / "model.joblib")
    # One partial_fit call per chunk: 3 chunks in each of 3 epochs.
    assert len(model.loss_curve_) == 9
    # The summary gives the last pass's mean loss, not the last chunk's.
    last_pass_loss = lines[-1].split(", ")[1].removeprefix("loss ")
    assert f"final training loss {last_pass_loss}," in result.stdout


def test_in_memory_fit_reports_progress(tmp_path, digits):
    np.save(tmp_path / "data.npy", digits)
    result = run_cli(
        "fit", "data.npy", "--model", "m.joblib", *SMALL_MODEL,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(in memory)" in result.stdout
    progress = [line for line in result.stderr.splitlines() if "remaining" in line]
    assert len(progress) == 3
    assert "epoch 3" in progress[-1]
    assert ": 3 epochs in " in result.stdout


def test_one_epoch_summary_is_singular(tmp_path, digits, capsys):
    np.save(tmp_path / "data.npy", digits)
    status = _cli.main(
        ["fit", str(tmp_path / "data.npy"), "--model", str(tmp_path / "m.joblib"),
         "--n-components", "16", "--k", "4", "--epochs", "1", "--quiet"]
    )  # fmt: skip
    assert status == 0
    assert ": 1 epoch in " in capsys.readouterr().out


@pytest.mark.parametrize("n_dead, text", [(0, "0 dead units"), (1, "1 dead unit.")])
def test_dead_unit_count_in_summary(tmp_path, digits, capsys, n_dead, text):
    np.save(tmp_path / "d.npy", digits)
    table = open_table(str(tmp_path / "d.npy"))
    model = KSparseAutoencoder(8, k=2, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(digits)
    model.n_dead_components_ = n_dead
    args = _cli.build_parser().parse_args(
        ["fit", str(tmp_path / "d.npy"), "--model", str(tmp_path / "m.joblib")]
    )
    _cli._print_fit_summary(model, table, args, "in memory", (2, 0.5), 1.0)
    assert text in capsys.readouterr().out


def test_unfitted_model_file_names_fix(tmp_path, digits, capsys):
    np.save(tmp_path / "data.npy", digits)
    joblib.dump(KSparseAutoencoder(), tmp_path / "unfitted.joblib")
    status = _cli.main(
        ["transform", str(tmp_path / "data.npy"),
         "--model", str(tmp_path / "unfitted.joblib"),
         "--output", str(tmp_path / "c.npz")]
    )  # fmt: skip
    assert status == 1
    error = capsys.readouterr().err
    assert "the model is not fitted" in error
    assert "Pass a file written by 'fit'" in error


def test_memory_limit_switches_to_streaming(tmp_path, digits):
    np.save(tmp_path / "data.npy", digits)
    # 300 x 64 float64 values take 0.15 MiB, over a limit of 0.1 MiB.
    result = run_cli(
        "fit", "data.npy", "--model", "m.joblib", "--memory-limit", "0.1",
        *SMALL_MODEL, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(streamed)" in result.stdout


def test_quiet_prints_no_progress(tmp_path, digits):
    data = write_csv(tmp_path / "data.csv", digits)
    result = run_cli(
        "fit", data, "--model", "model.joblib", "--stream", "--quiet",
        *SMALL_MODEL, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.fixture(params=["pandas", "csv module"])
def csv_reader(request, monkeypatch):
    """Run a test with each CSV reader: pandas, or Python's csv module."""
    if request.param == "csv module":
        # A None entry in sys.modules makes ``import pandas`` raise ImportError.
        monkeypatch.setitem(sys.modules, "pandas", None)
    return request.param


def make_bad_inputs(directory):
    """Write one faulty input per case; return (name, file, expected message)."""
    clean = "a,b,c\n0.1,0.2,0.3\n0.4,0.5,0.6\n"
    cases = {
        "text.csv": (clean + "0.7,high,0.9\n", "column 2 ('b') is not numeric"),
        "nan.csv": (clean + "0.7,0.8,nan\n", "line 4, column 3 ('c') is missing"),
        "empty-field.csv": (clean + "0.7,,0.9\n", "line 4, column 2 ('b')"),
        "inf.csv": (clean + "inf,0.8,0.9\n", "line 4, column 1 ('a') is inf"),
        "short.csv": (clean + "0.7,0.8\n", "line 4"),
        "long.csv": (clean + "0.7,0.8,0.9,1.0\n", "line 4"),
        "blank-lines.csv": (
            clean + "\n\n0.7,0.8,0.9\n0.7,high,0.9\n",
            "line 7 contains 'high'",
        ),
        "whitespace-lines.csv": (
            clean + "   \n\t\n0.7,high,0.9\n",
            "line 6 contains 'high'",
        ),
        "wide-rows.csv": (
            "a,b,c\n0.1,0.2,0.3,0.4\n0.5,0.6,0.7,0.8\n",
            "expected 3 fields per line, found 4 on line 2",
        ),
        "bool.csv": (clean + "True,0.8,0.9\n", "line 4 contains 'True'"),
    }
    inputs = []
    for name, (text, message) in cases.items():
        (directory / name).write_text(text)
        inputs.append((name, message))
    np.save(directory / "nan.npy", np.array([[0.0, 1.0, 2.0], [3.0, np.nan, 5.0]]))
    inputs.append(("nan.npy", "row 1, column 1 (0-based indices) is nan"))
    np.save(directory / "strings.npy", np.array([["x", "y", "z"]]))
    inputs.append(("strings.npy", "expected a numeric array"))
    np.save(directory / "flat.npy", np.zeros(3))
    inputs.append(("flat.npy", "expected a two-dimensional array"))
    inputs.append(("missing.csv", "missing.csv: file not found"))
    return inputs


@pytest.fixture
def three_column_model(tmp_path):
    X = np.random.RandomState(0).uniform(size=(40, 3))
    model = KSparseAutoencoder(8, k=2, max_iter=2, random_state=0).fit(X)
    joblib.dump(model, tmp_path / "model.joblib")
    return tmp_path / "model.joblib"


def test_bad_input_gives_message_not_traceback(tmp_path, three_column_model):
    (tmp_path / "text.csv").write_text("a,b,c\n0.1,0.2,0.3\n0.4,x,0.6\n")
    result = run_cli(
        "transform", "text.csv", "--model", three_column_model, "--output", "c.npz",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "column 2 ('b') is not numeric; line 3 contains 'x'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "c.npz").exists()


def test_bad_inputs_named_in_message(
    tmp_path, three_column_model, capsys, monkeypatch, csv_reader
):
    monkeypatch.chdir(tmp_path)
    for name, message in make_bad_inputs(tmp_path):
        status = _cli.main(
            ["transform", name, "--model", str(three_column_model), "--output", "c.npz"]
        )
        assert status == 1, name
        assert message in capsys.readouterr().err, name
        assert not (tmp_path / "c.npz").exists(), name


def test_csv_reader_without_pandas(tmp_path, digits, csv_reader):
    path = write_csv(tmp_path / "data.csv", digits)
    table = open_table(path)
    chunks = list(table.iter_chunks(chunk_rows=128))
    assert [chunk.shape for chunk in chunks] == [(128, 64), (128, 64), (44, 64)]
    np.testing.assert_array_equal(np.concatenate(chunks), digits)
    assert table.column_names[:2] == ["pixel0", "pixel1"]
    assert table.n_rows == 300


def test_csv_skips_whitespace_lines(tmp_path, csv_reader):
    path = tmp_path / "semicolons.csv"
    path.write_text("a;b;c\n0.1;0.2;0.3\n  \n\n0.4;0.5;0.6\n")
    table = open_table(str(path))
    assert table.delimiter == ";"
    assert table.column_names == ["a", "b", "c"]
    expected = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    np.testing.assert_array_equal(table.read(), expected)
    assert table.line_number(1) == 5


def test_csv_readers_agree_on_odd_files(tmp_path, csv_reader):
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("a,b,c\n1,2,3,\n4,5,6,\n")
    np.testing.assert_array_equal(
        open_table(str(trailing)).read(), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    )
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('a,"b\nb",c\n1,2,3\n')
    table = open_table(str(quoted))
    assert table.column_names == ["a", "b\nb", "c"]
    np.testing.assert_array_equal(table.read(), [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a,b\n1,2\n3,4,\n5,6\n", [[1, 2], [3, 4], [5, 6]]),
        ("a;b\n1;2;\n3;4;\n", [[1, 2], [3, 4]]),
        ("a,b\n1,2\n99999999999999999999,3\n", [[1, 2], [1e20, 3]]),
        ("a,b\n-1,2\n18446744073709551615,3\n", [[-1, 2], [2.0**64, 3]]),
        ("a,b,\n1,2,\n3,4,\n", [[1, 2], [3, 4]]),
        ("a;b;\n1;2\n3;4;\n", [[1, 2], [3, 4]]),
        ("1,2,\n3,4,\n", [[1, 2], [3, 4]]),
        ('a,b\n"1\n",2\n"\n3",4\n', [[1, 2], [3, 4]]),
        ('a,b\n" 1 ",\t2\x0b\n3,4\n', [[1, 2], [3, 4]]),
    ],
    ids=[
        "later-trailing-comma",
        "semicolon-trailing",
        "huge-int",
        "uint64-mix",
        "header-trailing-comma",
        "header-trailing-semicolon",
        "headerless-trailing-comma",
        "quoted-line-breaks-around-number",
        "whitespace-around-number",
    ],
)
@pytest.mark.parametrize("chunk_rows", [1, 100])
def test_csv_readers_read_same_values(tmp_path, csv_reader, text, expected, chunk_rows):
    path = tmp_path / "data.csv"
    path.write_text(text)
    chunks = list(open_table(str(path)).iter_chunks(chunk_rows=chunk_rows))
    np.testing.assert_array_equal(np.concatenate(chunks), expected)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,c\n1,2,3\n4,1_000,6\n", "line 3 contains '1_000'"),
        ("a,b,c\n1,2,3\n4,\u0661\u0662,6\n", "line 3 contains '\u0661\u0662'"),
        ("a,b,c\n1,2,3\n4,NA,6\n", "line 3, column 2 ('b') is missing or NaN"),
        (
            'a,"b\nb",c\n1,2,3\n4,5,6,7\n',
            "expected 3 fields per line, found 4 on line 4",
        ),
        ("a,b,c\n1,2,3\n4,\u00a05,6\n", r"line 3 contains '\xa05'"),
        ("a,b,c\n1,2,3\n4,5\x1c,6\n", r"line 3 contains '5\x1c'"),
        ("a,b,c\n1,2,3\n\x0c\n4,5,6\n", "line 3"),
        ("a,b,c\n1,2,3\n4,NAN,6\n", "line 3 contains 'NAN'"),
        ("a,b,c\n1,2,3\n4,NA ,6\n", "line 3 contains 'NA '"),
        ("1,nan,3\n4,5,6\n", "line 1, column 2 is missing or NaN"),
        ("a,b,c,\n1,2,3,\n4,5,6,7\n", "found 4 on line 3"),
        ("a,b,c\n1,2,3\n4,5\n", "expected 3 fields per line, found 2 on line 3"),
        ("a,b,c\n1,,3\n4,5\n", "found 2 on line 3"),
        ("a,b,c\n1;2;3\n4,5,6\n", "found 1 on line 2"),
        ('a,b,c\n"1,2,3\n4,5,6\n', "row that starts on line 2 has no closing quote"),
        ('a,b,c\n1,2,3\n4,"5,6\n7,8,9\n', "starts on line 3 has no closing quote"),
        ('a,b,c\n1,2,3\n4," ",6\n', "line 3 contains ' '"),
        ("a,b,c\n1,2,3\n4,\t,6\n", r"line 3 contains '\t'"),
        (",,\n1,2,3\n", "the first line contains only delimiters"),
        ("", "the file is empty or its first line is blank"),
        ("  \n1,2,3\n", "the file is empty or its first line is blank"),
    ],
    ids=[
        "underscore",
        "arabic-indic",
        "na-text",
        "wide-after-quoted-header",
        "no-break-space",
        "file-separator",
        "form-feed-line",
        "nan-spelling",
        "na-trailing-space",
        "headerless-nan",
        "wide-after-trailing-header",
        "narrow-line",
        "missing-before-narrow-line",
        "other-delimiter",
        "unclosed-quote-first-row",
        "unclosed-quote-later-row",
        "quoted-space",
        "tab-field",
        "delimiters-only-first-line",
        "empty-file",
        "blank-first-line",
    ],
)
def test_csv_readers_give_same_message(
    tmp_path, capsys, three_column_model, csv_reader, text, message
):
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    status = _cli.main(
        ["transform", str(path), "--model", str(three_column_model),
         "--output", str(tmp_path / "c.npz")]
    )  # fmt: skip
    assert status == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("header", ["a\n", ""])
def test_one_column_width_error_singular(tmp_path, csv_reader, header):
    path = tmp_path / "one.csv"
    path.write_text(header + "1\n2,3\n")
    table = open_table(path)
    with pytest.raises(DataError) as raised:
        list(table.iter_chunks(10))
    line = 2 + len(header.splitlines())
    expected = f"one.csv: expected 1 field per line, found 2 on line {line}."
    assert expected in str(raised.value)


def test_one_column_data_width_mismatch(tmp_path, capsys, three_column_model):
    np.save(tmp_path / "narrow.npy", np.ones((5, 1)))
    status = _cli.main(
        ["transform", str(tmp_path / "narrow.npy"), "--model",
         str(three_column_model), "--output", str(tmp_path / "codes.npz")]
    )  # fmt: skip
    message = capsys.readouterr().err
    assert status == 1
    assert "narrow.npy has 1 column, but the model in" in message
    assert "was fitted on 3 columns." in message


def test_width_mismatch_keeps_existing_output(tmp_path, digits, three_column_model):
    np.save(tmp_path / "wide.npy", digits)
    good = sp.random(5, 8, density=0.3, format="csr", random_state=0)
    sp.save_npz(tmp_path / "codes.npz", good)
    before = (tmp_path / "codes.npz").read_bytes()

    result = run_cli(
        "transform", "wide.npy", "--model", three_column_model,
        "--output", "codes.npz", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "wide.npy has 64 columns" in result.stderr
    assert "fitted on 3 columns" in result.stderr
    assert (tmp_path / "codes.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failed_fit_keeps_existing_model(tmp_path, three_column_model):
    before = three_column_model.read_bytes()
    (tmp_path / "text.csv").write_text("a,b,c\n0.1,0.2,0.3\n0.4,x,0.6\n")
    result = run_cli("fit", "text.csv", "--model", three_column_model, cwd=tmp_path)
    assert result.returncode == 1
    assert "column 2 ('b') is not numeric; line 3 contains 'x'" in result.stderr
    assert three_column_model.read_bytes() == before


def test_unreadable_model_file(tmp_path, digits, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("data.npy", digits)
    (tmp_path / "model.joblib").write_text("not a model")
    joblib.dump({"weights": 1}, "dict.joblib")
    sp.save_npz("codes.npz", sp.csr_matrix(digits[:3]))
    expected = {
        "model.joblib": "cannot load the model",
        "data.npy": "data.npy: is a NumPy .npy array, not a model",
        "codes.npz": "codes.npz: is a zip archive such as NumPy's .npz, not a model",
        "dict.joblib": "contains a dict, not a KSparseAutoencoder",
        "absent.joblib": "absent.joblib: file not found",
    }
    for name, message in expected.items():
        status = _cli.main(
            ["transform", "data.npy", "--model", name, "--output", "c.npz"]
        )
        assert status == 1, name
        assert message in capsys.readouterr().err, name
        assert not (tmp_path / "c.npz").exists(), name


def test_output_directory_must_exist(tmp_path, capsys):
    model_path = tmp_path / "no" / "such" / "model.joblib"
    status = _cli.main(["fit", "--model", str(model_path)])
    assert status == 1
    assert "does not exist" in capsys.readouterr().err


def test_diverged_fit_writes_no_model(tmp_path, capsys):
    model_path = tmp_path / "model.joblib"
    status = _cli.main(
        ["fit", "--model", str(model_path), "--learning-rate", "1e200", "--quiet",
         "--n-components", "16", "--k", "4", "--epochs", "2"]
    )  # fmt: skip
    assert status == 1
    error = capsys.readouterr().err
    assert "Training diverged" in error
    assert "lower --learning-rate" in error
    assert not model_path.exists()


def test_atomic_output_removes_temporary_file(tmp_path):
    target = tmp_path / "codes.npz"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as file:
            file.write(b"partial")
            raise RuntimeError("write failed")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npz"]

    with atomic_output(target) as file:
        file.write(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npz"]


def test_loss_stopper_counts_epochs_without_improvement():
    stopper = _cli._LossStopper(tol=0.01, n_iter_no_change=2)
    assert not stopper.should_stop(1.0)
    assert not stopper.should_stop(0.5)
    # 0.499 is not 1% below the best loss 0.5.
    assert not stopper.should_stop(0.499)
    assert stopper.should_stop(0.498)


def test_progress_rows_and_remaining_time():
    stream = io.StringIO()
    progress = _cli._Progress(stream, quiet=False, interval=0.0)
    progress.report_rows(2, 4, 500, fraction=0.5)
    progress.report_epoch(4, 4, loss=0.25)
    first, last = stream.getvalue().splitlines()
    assert first.startswith("epoch 2/4, 500 rows, elapsed ")
    assert "remaining about" in first
    assert last.startswith("epoch 4/4, loss 0.25, elapsed ")
    assert last.endswith("remaining about 0.0 s")

    quiet = io.StringIO()
    _cli._Progress(quiet, quiet=True, interval=0.0).report_epoch(1, 2, loss=1.0)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    "seconds, text",
    [(3.21, "3.2 s"), (125, "2 min 05 s"), (3 * 3600 + 65, "3 h 01 min")],
)
def test_format_seconds(seconds, text):
    assert _cli._format_seconds(seconds) == text


def test_transform_output_cannot_be_model(tmp_path, digits, capsys):
    np.save(tmp_path / "data.npy", digits)
    model = KSparseAutoencoder(8, k=2, max_iter=2, random_state=0).fit(digits)
    model_path = tmp_path / "model.joblib"
    joblib.dump(model, model_path)
    before = model_path.read_bytes()
    status = _cli.main(
        [
            "transform", str(tmp_path / "data.npy"), "--model", str(model_path),
            "--output", str(model_path),
        ]
    )  # fmt: skip
    assert status == 1
    assert "the output path is the model file" in capsys.readouterr().err
    assert model_path.read_bytes() == before


def transform_with_new_model(tmp_path, digits, data_path, output_path):
    """Fit a small model on digits, then run ``transform`` through the CLI."""
    model_path = tmp_path / "model.joblib"
    joblib.dump(KSparseAutoencoder(8, k=2, max_iter=2).fit(digits), model_path)
    arguments = ["transform", str(data_path), "--model", str(model_path)]
    return _cli.main(arguments + ["--output", str(output_path)])


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_transform_output_cannot_be_input(tmp_path, digits, capsys, suffix):
    data_path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(data_path, digits)
    else:
        write_csv(data_path, digits)
    before = data_path.read_bytes()
    status = transform_with_new_model(tmp_path, digits, data_path, data_path)
    assert status == 1
    assert "the output path is the input data file" in capsys.readouterr().err
    assert data_path.read_bytes() == before


def test_transform_output_hard_link_to_input(tmp_path, digits, capsys):
    data_path = tmp_path / "data.npz"
    np.savez(data_path, X=digits)
    link_path = tmp_path / "link.npz"
    os.link(data_path, link_path)
    status = transform_with_new_model(tmp_path, digits, data_path, link_path)
    assert status == 1
    assert "the output path is the input data file" in capsys.readouterr().err


def test_transform_output_must_be_npz(tmp_path, digits, capsys):
    data_path = tmp_path / "data.npy"
    np.save(data_path, digits)
    output_path = tmp_path / "codes.npy"
    status = transform_with_new_model(tmp_path, digits, data_path, output_path)
    assert status == 1
    assert "the output path must end in .npz" in capsys.readouterr().err
    assert not output_path.exists()


def test_fit_model_cannot_be_input(tmp_path, digits, capsys):
    data_path = tmp_path / "data.npy"
    np.save(data_path, digits)
    before = data_path.read_bytes()
    status = _cli.main(
        ["fit", str(data_path), "--model", str(data_path), "--epochs", "1"]
    )
    assert status == 1
    assert "the model path is the input data file" in capsys.readouterr().err
    assert data_path.read_bytes() == before


def test_npz_archive_named_npy(tmp_path, capsys):
    path = tmp_path / "archive.npy"
    with open(path, "wb") as file:
        np.savez(file, X=np.ones((30, 4)))
    status = _cli.main(["fit", str(path), "--model", str(tmp_path / "m.joblib")])
    message = capsys.readouterr().err
    assert status == 1
    assert "the file is an .npz archive, not an .npy array" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_byte_order_mark(tmp_path, csv_reader, header):
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    text = "a,b,c\n" if header else ""
    text += "\n".join(",".join(f"{value:g}" for value in row) for row in X) + "\n"
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    table = open_table(path)
    np.testing.assert_array_equal(np.concatenate(list(table.iter_chunks(2))), X)


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_npz_not_a_zip_archive(tmp_path, capsys, content):
    path = tmp_path / "data.npz"
    if content == "text":
        path.write_bytes(b"not a zip")
    else:
        np.savez(path, X=np.ones((30, 4)))
        path.write_bytes(path.read_bytes()[:200])
    status = _cli.main(["fit", str(path), "--model", str(tmp_path / "m.joblib")])
    message = capsys.readouterr().err
    assert status == 1
    assert "data.npz: not a zip archive, or a truncated one," in message
    assert "numpy.savez or scipy.sparse.save_npz" in message
    assert "allow_pickle" not in message
    assert not (tmp_path / "m.joblib").exists()


def save_npz_layout(path, X, layout):
    """Save ``X`` at ``path`` with np.savez, compressed or in Fortran order."""
    if layout == "compressed":
        np.savez_compressed(path, X=X)
    elif layout == "fortran":
        np.savez(path, X=np.asfortranarray(X))
    else:
        np.savez(path, X=X)
    return path


@pytest.mark.parametrize("layout", ["stored", "compressed", "fortran"])
def test_npz_chunks_match_npy(tmp_path, digits, layout):
    np.save(tmp_path / "data.npy", digits)
    npy_table = open_table(tmp_path / "data.npy")
    npz_table = open_table(save_npz_layout(tmp_path / "data.npz", digits, layout))
    assert npz_table.n_rows == 300
    assert npz_table.n_features == 64
    # A second pass reads the archive member from its start again.
    for _ in range(2):
        npy_chunks = list(npy_table.iter_chunks(70))
        npz_chunks = list(npz_table.iter_chunks(70))
        assert len(npz_chunks) == len(npy_chunks) == 5
        for npz_chunk, npy_chunk in zip(npz_chunks, npy_chunks, strict=True):
            assert npz_chunk.dtype == np.float64
            np.testing.assert_array_equal(npz_chunk, npy_chunk)
    np.testing.assert_array_equal(npz_table.read(), digits)


@pytest.mark.parametrize("layout", ["stored", "compressed"])
def test_npz_table_slices_out_of_order(tmp_path, digits, layout):
    table = open_table(save_npz_layout(tmp_path / "data.npz", digits, layout))
    # Slices out of order make the reader seek back in the member.
    for start, stop in [(200, 230), (10, 11), (0, 300), (299, 300)]:
        np.testing.assert_array_equal(table.data[start:stop], digits[start:stop])


def test_npz_member_shorter_than_header(tmp_path, digits, capsys):
    path = tmp_path / "short.npz"
    # The last chunk requests rows 300 to 329, and row 300 is the first missing.
    header = {"descr": "<f8", "fortran_order": False, "shape": (330, 64)}
    with zipfile.ZipFile(path, "w") as archive, archive.open("X.npy", "w") as file:
        np.lib.format.write_array_header_1_0(file, header)
        file.write(digits.tobytes())
    status = _cli.main(
        ["fit", str(path), "--model", str(tmp_path / "m.joblib"), "--stream",
         "--chunk-rows", "100", "--quiet", *SMALL_MODEL]
    )  # fmt: skip
    assert status == 1
    message = capsys.readouterr().err
    assert "short.npz:X.npy: the member ends before row 300" in message
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize("command", ["fit", "transform"])
def test_npz_negative_header_shape(tmp_path, capsys, three_column_model, command):
    path = tmp_path / "negative.npz"
    header = {"descr": "<f8", "fortran_order": False, "shape": (-1, 3)}
    with zipfile.ZipFile(path, "w") as archive, archive.open("X.npy", "w") as file:
        np.lib.format.write_array_header_1_0(file, header)
        file.write(np.ones((4, 3)).tobytes())
    output = tmp_path / "out.npz"
    if command == "fit":
        arguments = ["fit", str(path), "--model", str(output), "--quiet"]
    else:
        arguments = ["transform", str(path), "--model", str(three_column_model),
                     "--output", str(output), "--quiet"]  # fmt: skip
    status = _cli.main(arguments)
    message = capsys.readouterr().err
    assert status == 1
    assert "negative.npz: the archive member 'X.npy' is not a readable" in message
    assert "invalid shape (-1, 3) in the array header" in message
    assert not output.exists()


@pytest.mark.parametrize("error", [EOFError(), OSError("disk error")])
def test_npz_read_error_has_text(tmp_path, digits, error):
    table = open_table(save_npz_layout(tmp_path / "data.npz", digits, "compressed"))

    def fail_to_read(size=-1):
        raise error

    table.data._file.read = fail_to_read
    with pytest.raises(DataError) as raised:
        next(table.iter_chunks(70))
    message = str(raised.value)
    expected = "EOFError" if isinstance(error, EOFError) else "disk error"
    assert f"data.npz:X.npy: failed to read rows 0 to 69 ({expected})." in message
    assert "()" not in message
    table.data.close()


def test_npz_fortran_order_loaded_whole(tmp_path, digits):
    table = open_table(save_npz_layout(tmp_path / "data.npz", digits, "fortran"))
    assert isinstance(table.data, np.ndarray)
    assert table.data.flags.f_contiguous
    np.testing.assert_array_equal(table.data, digits)


def save_sparse_arrays(path, sparse_format, shape, **arrays):
    """Write the arrays of a sparse archive as scipy.sparse.save_npz names them."""
    np.savez(path, format=np.array(sparse_format), shape=np.array(shape), **arrays)
    return path


# Each case is valid but for one index array. Out-of-range indices made scipy's
# compiled routines write out of bounds and crash the process.
_CORRUPT_SPARSE_CASES = {
    "csr-column-out-of-range": dict(
        sparse_format="csr", shape=(2000, 5), data=np.ones(2000),
        indices=np.full(2000, 10**6), indptr=np.arange(2001),
        expected="indices must be < 5",
    ),
    "csr-decreasing-indptr": dict(
        sparse_format="csr", shape=(3, 5), data=np.ones(2),
        indices=np.array([0, 1]), indptr=np.array([0, 2, 1, 2]),
        expected="indptr must be a non-decreasing sequence",
    ),
    "csc-row-out-of-range": dict(
        sparse_format="csc", shape=(5, 2000), data=np.ones(2000),
        indices=np.full(2000, 10**6), indptr=np.arange(2001),
        expected="indices must be < 5",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_CORRUPT_SPARSE_CASES))
def test_corrupt_sparse_archive_rejected(tmp_path, case):
    arrays = dict(_CORRUPT_SPARSE_CASES[case])
    expected = arrays.pop("expected")
    save_sparse_arrays(tmp_path / "corrupt.npz", **arrays)
    # A subprocess, because without the check the process crashes.
    result = run_cli(
        "fit", "corrupt.npz", "--model", "m.joblib", "--quiet", "--epochs", "1",
        "--n-components", "4", "--k", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "corrupt.npz: the sparse matrix is corrupt" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize(
    "sparse_format, arrays, missing",
    [
        ("csr", {"indptr": np.array([0, 1, 2, 2])}, "the array 'indices'"),
        ("csc", {}, "the arrays 'indices' and 'indptr'"),
        ("coo", {"row": np.array([0, 1])}, "the array 'col'"),
        ("dia", {}, "the array 'offsets'"),
    ],
)
def test_sparse_archive_missing_array(tmp_path, sparse_format, arrays, missing):
    path = save_sparse_arrays(
        tmp_path / "partial.npz", sparse_format, (3, 2), data=np.ones(2), **arrays
    )
    with pytest.raises(DataError) as error:
        open_table(path)
    message = str(error.value)
    assert message.startswith(f"{path}: the sparse {sparse_format} archive is ")
    assert f"is missing {missing}." in message
    assert "scipy.sparse.save_npz" in message


def test_sparse_archive_unsupported_format(tmp_path):
    path = save_sparse_arrays(tmp_path / "lil.npz", "lil", (3, 2), data=np.ones(2))
    with pytest.raises(DataError) as error:
        open_table(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable .npz file (")
    assert "format lil" in message


def patch_first_member(path, flag_bits=None, compress_type=None):
    """Set the flag bits or the compression method of the first member of a
    zip archive, in its local header and in its central directory entry."""
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    # The flags and the method are at bytes 6 and 8 of a local header, and at
    # bytes 8 and 10 of a central directory entry.
    if flag_bits is not None:
        for offset in (6, central + 8):
            raw[offset : offset + 2] = flag_bits.to_bytes(2, "little")
    if compress_type is not None:
        for offset in (8, central + 10):
            raw[offset : offset + 2] = compress_type.to_bytes(2, "little")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("content", ["dense", "sparse"])
@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"flag_bits": 0x1}, "is encrypted"),
        ({"compress_type": 9}, "(compression method 9: That compression method"),
    ],
    ids=["encrypted", "deflate64"],
)
def test_npz_unsupported_member_rejected(tmp_path, capsys, content, patch, expected):
    path = tmp_path / "data.npz"
    if content == "dense":
        np.savez(path, X=np.ones((30, 4)))
    else:
        sp.save_npz(path, sp.csr_matrix(np.eye(30, 4)), compressed=False)
    with zipfile.ZipFile(path) as archive:
        first_member = archive.namelist()[0]
    patch_first_member(path, **patch)
    status = _cli.main(["fit", str(path), "--model", str(tmp_path / "m.joblib")])
    message = capsys.readouterr().err
    assert status == 1
    assert f"data.npz: the archive member {first_member!r} " in message
    assert expected in message
    assert "numpy.savez or numpy.savez_compressed" in message
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize("layout", ["stored", "compressed", "fortran"])
def test_streamed_npz_fit_matches_npy(tmp_path, digits, layout):
    np.save(tmp_path / "data.npy", digits)
    save_npz_layout(tmp_path / "data.npz", digits, layout)
    models = []
    for name in ["data.npy", "data.npz"]:
        model_path = tmp_path / f"{name}.joblib"
        status = _cli.main(
            ["fit", str(tmp_path / name), "--model", str(model_path), "--stream",
             "--chunk-rows", "70", "--quiet", *SMALL_MODEL]
        )  # fmt: skip
        assert status == 0, name
        models.append(joblib.load(model_path))
    npy_model, npz_model = models
    assert len(npz_model.loss_curve_) == 3 * 5
    np.testing.assert_array_equal(npz_model.loss_curve_, npy_model.loss_curve_)
    np.testing.assert_array_equal(npz_model.components_, npy_model.components_)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("shape", [(5,), (5, 2)])
def test_structured_array_rejected(tmp_path, capsys, suffix, shape):
    X = np.zeros(shape, dtype=[("a", "f8"), ("b", "f8")])
    path = tmp_path / f"records{suffix}"
    if suffix == ".npy":
        np.save(path, X)
    else:
        np.savez(path, X=X)
    status = _cli.main(["fit", str(path), "--model", str(tmp_path / "m.joblib")])
    message = capsys.readouterr().err
    assert status == 1
    assert f"records{suffix}: expected a plain numeric array" in message
    assert "got the structured dtype [('a', '<f8'), ('b', '<f8')]" in message
    assert "numpy.lib.recfunctions.structured_to_unstructured" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("command", ["fit", "transform"])
def test_empty_output_path_rejected(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    np.save("data.npy", np.ones((30, 4)))
    if command == "fit":
        arguments = ["fit", "data.npy", "--model", ""]
    else:
        arguments = ["transform", "data.npy", "--model", "m.joblib", "--output", ""]
    # The parent is where a temporary file for an empty path would go.
    parent_before = sorted(os.listdir(tmp_path.parent))
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(arguments)
    assert exit_info.value.code == 2
    option = "--model" if command == "fit" else "--output"
    message = f"argument {option}: expected a file path, got an empty string"
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["data.npy"]
    assert sorted(os.listdir(tmp_path.parent)) == parent_before


@pytest.mark.parametrize(
    "arguments, argument",
    [
        (["fit", "", "--model", "m.joblib"], "DATA"),
        (["transform", "", "--model", "m.joblib", "--output", "o.npz"], "DATA"),
        (["transform", "data.npy", "--model", "", "--output", "o.npz"], "--model"),
    ],
)
def test_empty_input_path_rejected(tmp_path, capsys, monkeypatch, arguments, argument):
    monkeypatch.chdir(tmp_path)
    np.save("data.npy", np.ones((30, 4)))
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(arguments)
    assert exit_info.value.code == 2
    message = f"argument {argument}: expected a file path, got an empty string"
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["data.npy"]


def test_open_table_rejects_empty_path():
    with pytest.raises(DataError, match="the input path is empty; pass a file name"):
        open_table("")


def test_atomic_output_rejects_empty_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="the output path is empty"):
        with atomic_output(""):
            pass
    with pytest.raises(DataError, match="the output path is empty"):
        check_writable("")


def test_atomic_output_reports_os_errors(tmp_path):
    with pytest.raises(DataError) as missing:
        with atomic_output(tmp_path / "absent" / "codes.npz"):
            pass
    assert f"{tmp_path / 'absent' / 'codes.npz'}: failed to write" in str(missing.value)
    assert "No such file or directory" in str(missing.value)

    directory = tmp_path / "taken"
    (directory / "inside").mkdir(parents=True)
    with pytest.raises(DataError, match=r"taken: failed to write the file \("):
        with atomic_output(directory) as file:
            file.write(b"codes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

    target = tmp_path / "taken" / "codes.npz"
    target.write_bytes(b"good")
    with pytest.raises(DataError, match="No space left on device"):
        with atomic_output(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in directory.iterdir()) == ["codes.npz", "inside"]


def make_special_file(path, kind):
    """Create a FIFO or a character device at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
        return
    if os.geteuid() != 0:
        pytest.skip("creating a character device needs root")
    # The device numbers of /dev/null on Linux.
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))


_SPECIAL_FILE_KINDS = {"fifo": "a FIFO (named pipe)", "device": "a character device"}


@pytest.mark.parametrize("kind", list(_SPECIAL_FILE_KINDS))
def test_output_special_file_rejected(tmp_path, kind):
    special = tmp_path / "special.npz"
    make_special_file(special, kind)
    link = tmp_path / "link.npz"
    link.symlink_to(special)
    expected = f"is {_SPECIAL_FILE_KINDS[kind]}, not a regular file"
    for path in [special, link]:
        with pytest.raises(DataError, match=re.escape(expected)) as raised:
            check_writable(path)
        assert str(raised.value).startswith(f"{path}: ")
        assert "Pass the path of a regular file" in str(raised.value)
        with pytest.raises(DataError, match=re.escape(expected)):
            with atomic_output(path) as file:
                file.write(b"codes")
    assert not stat.S_ISREG(special.lstat().st_mode)
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "special.npz"]


@pytest.mark.parametrize("kind", list(_SPECIAL_FILE_KINDS))
def test_fit_model_special_file_rejected(tmp_path, capsys, kind):
    special = tmp_path / "model.joblib"
    make_special_file(special, kind)
    status = _cli.main(["fit", "--model", str(special), "--quiet", *SMALL_MODEL])
    message = capsys.readouterr().err
    assert status == 1
    assert f"model.joblib: is {_SPECIAL_FILE_KINDS[kind]}, not a regular" in message
    assert len(message.splitlines()) == 1
    assert not stat.S_ISREG(special.lstat().st_mode)


def record_temporary_directories(monkeypatch):
    """Return the list that each tempfile.mkstemp call adds its directory to."""
    directories = []
    create_temporary = tempfile.mkstemp

    def record(*args, **kwargs):
        directories.append(kwargs["dir"])
        return create_temporary(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", record)
    return directories


@pytest.mark.parametrize("target_exists", [True, False])
def test_atomic_output_writes_through_symlink(tmp_path, monkeypatch, target_exists):
    (tmp_path / "data").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "data" / "codes.npz"
    if target_exists:
        target.write_bytes(b"old")
    link = tmp_path / "links" / "codes.npz"
    link.symlink_to(os.path.join("..", "data", "codes.npz"))
    directories = record_temporary_directories(monkeypatch)
    check_writable(link)
    with atomic_output(link) as file:
        file.write(b"new")
    assert link.is_symlink()
    assert os.readlink(link) == os.path.join("..", "data", "codes.npz")
    assert target.read_bytes() == b"new"
    assert directories == [str(tmp_path / "data")]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["codes.npz"]
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["codes.npz"]


def test_transform_output_through_symlink(tmp_path, digits, three_column_model):
    np.save(tmp_path / "data.npy", digits[:, :3])
    target = tmp_path / "codes-target.npz"
    target.write_bytes(b"old")
    link = tmp_path / "codes.npz"
    link.symlink_to(target.name)
    status = _cli.main(
        ["transform", str(tmp_path / "data.npy"), "--model", str(three_column_model),
         "--output", str(link), "--quiet"]
    )  # fmt: skip
    assert status == 0
    assert link.is_symlink()
    assert sp.load_npz(target).shape == (300, 8)


@pytest.mark.parametrize("permissions", [0o600, 0o640, 0o755])
def test_atomic_output_keeps_permissions(tmp_path, permissions):
    target = tmp_path / "model.joblib"
    target.write_bytes(b"old")
    target.chmod(permissions)
    with atomic_output(target) as file:
        file.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == permissions


def test_atomic_output_new_file_follows_umask(tmp_path):
    target = tmp_path / "model.joblib"
    previous_umask = os.umask(0o027)
    try:
        with atomic_output(target) as file:
            file.write(b"new")
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_fit_write_failure_is_one_line(tmp_path, capsys, monkeypatch):
    def fail_to_create(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", fail_to_create)
    model_path = tmp_path / "m.joblib"
    status = _cli.main(
        ["fit", "--model", str(model_path), "--quiet", *SMALL_MODEL]
    )  # fmt: skip
    message = capsys.readouterr().err
    assert status == 1
    assert f"{model_path}: failed to write the file (Permission denied)" in message
    assert len(message.splitlines()) == 1
    assert not model_path.exists()


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5"])
def test_random_state_checked_by_parser(tmp_path, capsys, seed):
    model_path = str(tmp_path / "m.joblib")
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["fit", "--model", model_path, "--random-state", seed])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "argument --random-state: " in message
    if seed == "1.5":
        assert "invalid integer: '1.5'" in message
    else:
        assert f"must be an integer from 0 to 4294967295, got {seed}" in message


def test_random_state_accepts_largest_seed():
    parser = _cli.build_parser()
    args = parser.parse_args(["fit", "--model", "m.joblib", "--random-state", "0"])
    assert args.random_state == 0
    largest = ["fit", "--model", "m.joblib", "--random-state", "4294967295"]
    assert parser.parse_args(largest).random_state == 2**32 - 1


@pytest.mark.parametrize("k, expected", [("50", "k=50 reduced to 8"), ("8", "k=8")])
def test_fit_summary_shows_k_used(tmp_path, digits, capsys, k, expected):
    np.save(tmp_path / "data.npy", digits)
    status = _cli.main(
        ["fit", str(tmp_path / "data.npy"), "--model", str(tmp_path / "m.joblib"),
         "--n-components", "8", "--k", k, "--epochs", "1", "--quiet"]
    )  # fmt: skip
    assert status == 0
    output, error = capsys.readouterr()
    assert f"Fitted KSparseAutoencoder(n_components=8, {expected}) on " in output
    if k == "50":
        assert "k=50 is larger than n_components=8; using k=8" in error


def test_check_writable_rejects_trailing_slash(tmp_path):
    existing = tmp_path / "model.joblib"
    existing.write_bytes(b"old")
    for path in [f"{existing}/", f"{tmp_path / 'new.joblib'}/"]:
        with pytest.raises(DataError, match="is a directory, expected a file name"):
            check_writable(path)
    assert existing.read_bytes() == b"old"


def test_check_writable_rejects_long_name(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(DataError, match=f"more than the {limit}"):
        check_writable(tmp_path / ("m" * (limit + 1)))


def test_atomic_output_accepts_name_at_length_limit(tmp_path):
    # The temporary file's name must not exceed the limit either.
    path = tmp_path / ("m" * os.pathconf(tmp_path, "PC_NAME_MAX"))
    check_writable(path)
    with atomic_output(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root may write to write-protected files",
)
def test_check_writable_rejects_write_protected_file(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(b"old")
    path.chmod(0o444)
    with pytest.raises(DataError, match="write-protected"):
        check_writable(path)


def test_npy_with_negative_dimension_is_rejected(tmp_path):
    path = tmp_path / "negative.npy"
    header = {"descr": "<f8", "fortran_order": False, "shape": (30, -4)}
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        file.write(np.zeros(120).tobytes())
    with pytest.raises(DataError, match="not a readable .npy file"):
        open_table(str(path))


@pytest.mark.parametrize(
    "arrays",
    [{"format": np.array(5)}, {"shape": np.array([20.5, 5])}],
    ids=["numeric-format", "float-shape"],
)
def test_sparse_npz_with_odd_metadata_is_rejected(tmp_path, arrays):
    matrix = sp.random(20, 5, density=0.3, format="csr", random_state=0)
    content = {
        "format": np.array("csr"), "shape": np.array(matrix.shape),
        "data": matrix.data, "indices": matrix.indices, "indptr": matrix.indptr,
    }  # fmt: skip
    content.update(arrays)
    path = tmp_path / "odd.npz"
    np.savez(path, **content)
    with pytest.raises(DataError, match="not a readable .npz file"):
        open_table(str(path))


def test_small_scale_warning_names_cli_option(tmp_path, digits, capsys):
    np.save(tmp_path / "tiny.npy", digits * 1e-7)
    status = _cli.main(
        ["fit", str(tmp_path / "tiny.npy"), "--model", str(tmp_path / "m.joblib"),
         "--quiet", *SMALL_MODEL]
    )  # fmt: skip
    assert status == 0
    message = capsys.readouterr().err
    assert "warning: X varies by about" in message
    assert "On the command line, lower --learning-rate." in message
