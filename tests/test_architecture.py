"""The package layout's one rule: imports between the stage packages of ``selfdistill/`` flow one way.

    models <- data <- train;  models <- decode <- eval (<- serve)

Read from the source with ``ast`` (every import, including those inside functions), so a lazy import that runs
back up the chain is caught as well as a top-level one.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "selfdistill"
#: stage -> the stages it may import (besides itself and the shared top-level modules: SHARED).
ALLOWED = {
    "models": set(),
    "data": {"models"},
    "train": {"models", "data"},
    "decode": {"models"},
    "eval": {"models", "data", "decode"},
    "serve": {"models", "data", "decode", "eval"},
    "lm_eval": {"eval"},
}
SHARED = {"paths", "provenance", "run_folder", "cli", "timing", "op_count"}


def _stage_imports(path: Path) -> set[str]:
    """Top-level ``selfdistill`` sub-packages that the module at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "selfdistill" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] in ALLOWED)


def test_every_module_sits_in_a_stage_or_is_shared():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top <= SHARED, f"top-level modules outside the stage packages: {sorted(top - SHARED)}"
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert stages <= set(ALLOWED), f"unknown stage packages: {sorted(stages - set(ALLOWED))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    stage = path.relative_to(PACKAGE).parts[0]
    wrong = _stage_imports(path) - ALLOWED[stage] - SHARED - {stage}
    assert not wrong, (f"{path.relative_to(PACKAGE)} ({stage}) imports {sorted(wrong)}; "
                       f"allowed: {sorted(ALLOWED[stage])}")


def test_the_shared_modules_import_no_stage():
    for name in SHARED:
        assert not _stage_imports(PACKAGE / f"{name}.py") - SHARED, name


def test_the_rule_catches_a_backward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from selfdistill.train.layout import build_layout\n")
    assert _stage_imports(bad) == {"train"}


def test_rewards_holds_graders_only():
    rewards = PACKAGE.parent / "rewards"
    assert {p.stem for p in rewards.glob("*.py")} == {"__init__", "graders"}
    for p in rewards.glob("*.py"):
        assert not _stage_imports(p), f"{p.name} imports selfdistill; graders are pure string functions"


def test_scripts_are_thin_and_tests_import_the_package():
    """Every script is argument parsing plus one call into a package recipe (issue #30: at most ~80 lines), and no
    test loads a script by its path: what a test exercises lives in ``selfdistill``."""
    root = PACKAGE.parent
    long = {p.name: n for p in (root / "scripts").glob("*.py") if (n := len(p.read_text().splitlines())) > 80}
    assert not long, f"scripts over 80 lines (move their logic into a package recipe): {long}"
    by_path = ("spec_from_file_" + "location", "run_" + "path(")  # spelt apart so this file does not match itself
    for path in (root / "tests").rglob("*.py"):
        text = path.read_text()
        assert not any(call in text for call in by_path), (
            f"{path.relative_to(root)} loads a module by path; import it from selfdistill")
