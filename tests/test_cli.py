"""The one option reader of every script (selfdistill.cli): usage errors, not tracebacks."""

from dataclasses import dataclass

import pytest

from selfdistill.cli import parse_config, plain_folder_name


@dataclass
class Options:
    steps: int = 1


def test_a_malformed_yaml_config_is_a_usage_error_that_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n  oops: {")
    with pytest.raises(SystemExit) as exit_:
        parse_config(Options, ["--config", str(bad)])
    assert exit_.value.code == 2 and f"--config {bad}: not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", ""])
def test_a_results_folder_name_cannot_leave_its_parent(name):
    with pytest.raises(ValueError, match="must be a plain folder name"):
        plain_folder_name(name)
    assert plain_folder_name("smollm2-k5_cont1.dev+x") == "smollm2-k5_cont1.dev+x"
