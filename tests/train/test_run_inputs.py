"""Bad data specs and model paths fail before any model loads, with the file, row and fix named."""

import pytest

import selfdistill.models.loader as loader
from selfdistill.train.run import run_distillation

from test_distill_trainer import _cfg, _rows


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(loader, "load_model", refuse)


def _jsonl(path, text: bytes):
    path.write_bytes(text)
    return str(path)


GOOD_ROW = b'{"id": "a", "task": "t", "subtask": "s", "question": "q", "solution": "s", "answer": "1", "group": "g"}\n'


@pytest.mark.parametrize("content, error, message", [
    (b"", ValueError, "holds no records"),
    (GOOD_ROW + b'{"id": "b", "question": "caf\xff"}\n', ValueError, "line 2 is not UTF-8"),
    (GOOD_ROW + b'{"id": \n', ValueError, "line 2 is not valid JSON"),
    (b'{"question": "q"}\n', ValueError, r"rows lack the columns \['id', 'task'"),
    (b"[1, 2]\n", ValueError, "row 1 is a JSON list"),
])
def test_bad_data_files_fail_before_the_model_loads(tmp_path, no_model_load, content, error, message):
    path = _jsonl(tmp_path / "rows.jsonl", content)
    with pytest.raises(error, match=f"rows.jsonl.*{message}"):
        run_distillation(_cfg(tmp_path / "out", dataset=path, model_name_or_path="tiny-teacher"))


def test_a_missing_data_file_is_not_an_unknown_dataset(tmp_path, no_model_load):
    with pytest.raises(FileNotFoundError, match="dataset file .*missing.jsonl does not exist"):
        run_distillation(_cfg(tmp_path / "out", dataset=str(tmp_path / "missing.jsonl")))


def test_a_one_group_file_fails_at_the_split_before_the_model_loads(tmp_path, no_model_load):
    path = tmp_path / "one_group.jsonl"
    _rows(4).map(lambda r: {"group": "g"}).to_json(str(path))
    with pytest.raises(ValueError, match="at least 2 distinct groups"):
        run_distillation(_cfg(tmp_path / "out", dataset=str(path)))


def test_a_missing_model_path_fails_before_the_data_is_read(tmp_path, no_model_load):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_distillation(_cfg(tmp_path / "out", model_name_or_path=str(tmp_path / "nope"),
                              dataset=str(tmp_path / "missing.jsonl")))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_validation_fraction_is_checked_in_the_config(fraction):
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        _cfg("/tmp/unused", validation_fraction=fraction)
