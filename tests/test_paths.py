"""Atomic writes (selfdistill/paths.py): the one way files that a killed run could leave half-written are written."""

import pytest

from selfdistill.paths import atomic_file, write_text_atomic


def test_a_finished_block_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text_atomic(target, "old")
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # a reader still sees the old file while the new one is written
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_an_error_in_the_block_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
