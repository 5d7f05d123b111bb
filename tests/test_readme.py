"""The README's test command is exactly what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    lines = (ROOT / ".ci/run").read_text().splitlines()
    ci_lines = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert len(ci_lines) == 1
    readme = (ROOT / "README.md").read_text()
    assert f"\n{ci_lines[0]}\n" in readme
    assert "python -m pytest" in ci_lines[0]
