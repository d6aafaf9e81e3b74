"""The repository's layout promises: no stdlib shadowing, the console script, the README's commands."""

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_stdlib_names_are_not_shadowed_from_the_repo_root():
    code = "import platform, queue; print(platform.__file__); print(queue.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in result.stdout.split():
        assert path.startswith(stdlib), path


def test_opsctl_console_script_prints_its_version():
    opsctl = Path(sys.executable).parent / "opsctl"
    result = subprocess.run([str(opsctl), "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("opsctl 0.")


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("./dev ")]
    assert lines[:2] == ["./dev demo", "./dev test"]
    assert "./dev test" in (REPO / ".ci" / "run").read_text().splitlines()
