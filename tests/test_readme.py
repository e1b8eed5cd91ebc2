"""The README's two fresh-machine commands are the ones CI and users actually run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in first_block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands_that_pin_the_cpu_torch_first():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    for cmd in commands:
        assert cmd.index("pip install -q torch==2.13.0") < cmd.index("pip install -q -e ")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == _readme_commands()[1]
