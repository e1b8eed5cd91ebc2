"""The one home of a run's output folder: claim, refuse-if-changed, atomic writes, the provenance record shape."""

import json

import pytest

from selfdistill.run_folder import (FINGERPRINT_FILE, ChangedOptionsError, RunFolder, provenance_record,
                                    read_provenance, refuse_changed, write_markdown_report)

PROV = {"command": "python x.py --a 1", "commit": "abc", "hardware": "cpu, 2 cores"}


def test_refuse_changed_names_each_changed_option_and_spares_the_allowed_ones():
    refuse_changed({"a": 1, "threads": 1}, {"a": 1, "threads": 2}, may_change={"threads"}, where="w", hint="h")
    with pytest.raises(ChangedOptionsError, match=r"^w holds .*\{'a': \(1, 2\), 'b': \(None, 3\)\}\. h$"):
        refuse_changed({"a": 1}, {"a": 2, "b": 3}, where="w", hint="h")


def test_changed_options_error_is_a_value_error_and_a_file_exists_error():
    class Mine(ChangedOptionsError):
        pass

    with pytest.raises(Mine):
        refuse_changed({"a": 1}, {"a": 2}, where="w", hint="h", error=Mine)
    assert issubclass(ChangedOptionsError, ValueError) and issubclass(ChangedOptionsError, FileExistsError)


def test_claim_creates_accepts_the_same_and_refuses_another_fingerprint(tmp_path):
    folder = RunFolder(tmp_path / "run").claim({"n": 1}, what="test run", hint="Use another --out.")
    assert json.loads((tmp_path / "run" / FINGERPRINT_FILE).read_text()) == {"n": 1}
    (folder.root / "part.txt").write_text("work")
    RunFolder(tmp_path / "run").claim({"n": 1}, what="test run", hint="-")  # resumes
    with pytest.raises(ChangedOptionsError, match=r"test run.*'n': \(1, 2\).*Use another --out"):
        RunFolder(tmp_path / "run").claim({"n": 2}, what="test run", hint="Use another --out.")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not empty and holds no test run"):
        RunFolder(tmp_path / "other").claim({"n": 1}, what="test run", hint="-")
    assert not (tmp_path / "other" / FINGERPRINT_FILE).exists()


def test_writes_are_atomic_and_create_folders(tmp_path):
    folder = RunFolder(tmp_path / "a")
    path = folder.write_csv("sub/t.csv", [{"x": 1, "y": None}, {"x": 2, "y": "b"}], columns=["x", "y"])
    assert path.read_bytes() == b"x,y\r\n1,\r\n2,b\r\n"
    with pytest.raises(TypeError):
        folder.write_json("sub/t.csv", {"bad": object()})
    assert path.read_bytes() == b"x,y\r\n1,\r\n2,b\r\n"  # a failed write leaves the old file
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.csv"]  # and no temporary beside it


def test_one_record_shape_read_back_from_either(tmp_path):
    record = provenance_record(PROV, rows=3)
    assert record == {"provenance": PROV, "rows": 3}
    saved = json.loads(RunFolder(tmp_path).write_record("r.json", PROV, rows=3).read_text())
    assert saved == record and read_provenance(saved) == PROV
    assert read_provenance(PROV | {"steps": 5})["commit"] == "abc"  # the flat shape of older records


def test_markdown_report_heads_with_the_provenance(tmp_path):
    path = write_markdown_report(tmp_path / "r.md", PROV, {"A": "runs/a"}, "Runs", "| t |")
    assert path.read_text() == ("Command: `python x.py --a 1`\n\nCommit: abc\n\nHardware: cpu, 2 cores\n\n"
                                "Runs:\n- A: `runs/a`\n\n| t |\n")
