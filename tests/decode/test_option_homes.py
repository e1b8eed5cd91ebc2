"""A decoding option has one home, its strategy class (#30): every settings type and entry point gets its fields
from the registry (``registry.with_options``), and none declares one by hand. A new strategy with a new option is
one class: it appears as a ``DecodeSetting`` field, a server flag and request option, a sweep-grid value where
asked, an lm-eval ``model_args`` key (``pop_options``) and an ``mtp_generate`` keyword, with nothing else to edit."""

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

from selfdistill.decode.decoder import mtp_generate
from selfdistill.decode.registry import Option, declared_options, with_options

PACKAGE = Path(__file__).resolve().parents[2] / "selfdistill"
#: Fields that share a name with a decoding option and mean something else: training's chunk sizes.
OTHER_MEANINGS = {("train/config.py", "DistillConfig", "k_max"), ("train/layout.py", "Layout", "k"),
                  ("train/bench.py", "TrainBenchConfig", "k")}


def _hand_written_option_fields() -> list[tuple[str, str, str]]:
    names, found = set(declared_options()), []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found += [(str(path.relative_to(PACKAGE)), node.name, st.target.id) for st in node.body
                          if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                          and st.target.id in names]
    return [f for f in found if f not in OTHER_MEANINGS]


def test_no_class_declares_a_strategy_option_by_hand():
    assert _hand_written_option_fields() == []


def test_mtp_generate_takes_the_options_as_the_registry_declares_them():
    params = inspect.signature(mtp_generate).parameters
    assert not set(declared_options()) & set(params)
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("where", ["selfdistill.eval.evaluation:DecodeSetting",
                                   "selfdistill.serve.__main__:ServeConfig"])
def test_settings_types_carry_every_declared_option(where):
    import importlib

    module, name = where.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert set(declared_options()) <= {f.name for f in dataclasses.fields(cls)}


def test_with_options_adds_typed_fields_with_the_declared_help_and_refuses_unknown_ones():
    @with_options("threshold", "k_max", note="here")
    @dataclasses.dataclass(kw_only=True)
    class Config:
        """Doc."""

        model: str = "m"

    by_name = {f.name: f for f in dataclasses.fields(Config)}
    assert list(by_name) == ["model", "threshold", "k_max"] and Config.__doc__ == "Doc."
    assert by_name["threshold"].default is None and by_name["threshold"].type == float | None
    declared: Option = declared_options()["k_max"]
    assert by_name["k_max"].metadata["help"] == f"{declared.help} (here)" and by_name["k_max"].type == int | None
    assert Config(threshold=0.5).threshold == 0.5
    with pytest.raises(ValueError, match="no strategy declares the options \\['tau'\\]"):
        with_options("tau")(Config)


def test_the_scan_finds_a_hand_written_option(tmp_path, monkeypatch):
    (tmp_path / "x.py").write_text("class ServeLike:\n    threshold: float | None = None\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path)
    assert _hand_written_option_fields() == [("x.py", "ServeLike", "threshold")]
