"""The image recipe without Docker: the worker image's Python layer rebuilt in a fresh virtualenv.

Follows images/base/Dockerfile and images/worker/Dockerfile step by step: the base lock file, then
the worker lock file, both with --require-hashes and --no-deps (so the hashes are those of the files
pip picks, and `pip check` proves the pins are complete), then the project with --no-deps from
exactly what the worker Dockerfile COPYs, then the two build commands: `python -m worker index
build` and `python -m worker selfcheck`, with ML_WORKER_MODEL where the default image has it: the
model directory of the packaged all-MiniLM-L6-v2 wheel the base lock installs, loaded offline.
Prints the installed size of the image's Python packages.

torch==2.13.0+cpu resolves to this machine's copy of the CPU wheel through pip's own configuration
(find-links); the Dockerfile gets it from the PyTorch CPU index, and the lock's hash must match both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlw_config import PACKAGED_MODEL_DIR
from mlw_mocks import REPO_ROOT

WORKER_DOCKERFILE = REPO_ROOT / "images" / "worker" / "Dockerfile"
OLD_IMAGE_GB = 4.6  # the app's old image, with the CUDA build of torch


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_project_like_the_dockerfile(dest: Path) -> Path:
    """Copy the sources the worker Dockerfile COPYs into /tmp/src, to dest, honouring .dockerignore's
    __pycache__ exclusions."""
    text = re.sub(r"\\\n", " ", WORKER_DOCKERFILE.read_text())
    copied = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or not parts[-1].startswith("/tmp/src"):
            continue
        target = dest / parts[-1].removeprefix("/tmp/src").strip("/")
        for source in parts[1:-1]:
            src = REPO_ROOT / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)
            copied += 1
    assert copied >= 3, "expected the Dockerfile to COPY pyproject.toml, README.md and worker/ to /tmp/src"
    return dest


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root, name)
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def missing_package_data(site: Path) -> list[str]:
    """Data files of the worker package (not .py) that the installed package lacks."""
    source = REPO_ROOT / "worker"
    missing = []
    for path in source.rglob("*"):
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
            relative = path.relative_to(REPO_ROOT)
            if not (site / relative).exists():
                missing.append(str(relative))
    return sorted(missing)


@pytest.fixture
def workdir():
    """A private temporary directory: pytest's shared tmp_path base is pruned by concurrent sessions."""
    with tempfile.TemporaryDirectory(prefix="mlw-image-recipe-") as path:
        yield Path(path)


@pytest.mark.slow
def test_worker_image_python_layer_installs_and_passes_selfcheck(workdir):
    tmp_path = workdir
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--no-cache-dir", "--only-binary=:all:", "--no-deps", "--require-hashes", "-q"]

    run([*pip, "-r", str(REPO_ROOT / "images" / "base" / "requirements.lock")], timeout=1800)
    run([*pip, "-r", str(REPO_ROOT / "images" / "worker" / "requirements.lock")], timeout=900)
    src = copy_project_like_the_dockerfile(tmp_path / "src")
    run([py, "-m", "pip", "install", "--no-cache-dir", "--no-deps", "--no-build-isolation", "-q", str(src)],
        timeout=600)
    run([py, "-m", "pip", "check"], timeout=300)

    # No CUDA anywhere: the CPU build of torch and no NVIDIA wheels.
    probe = run([py, "-c", "import torch, json; print(json.dumps([torch.__version__, torch.cuda.is_available()]))"],
                cwd=tmp_path, timeout=300)
    version, cuda = json.loads(probe.stdout)
    assert version.startswith("2.13.0") and not cuda
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    assert not [p for p in site.iterdir() if p.name.startswith("nvidia")]

    # The default image's model: the packaged wheel's directory, at the same place under site-packages.
    model_dir = site / PACKAGED_MODEL_DIR.split("/site-packages/", 1)[1]
    assert (model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors")), model_dir

    total = tree_size(site)
    torch_size = tree_size(site / "torch")
    mb = 1024 * 1024
    print(f"\ninstalled size of the worker image's Python packages (site-packages): {total / mb:.0f} MB "
          f"(torch {torch_size / mb:.0f} MB, everything else {(total - torch_size) / mb:.0f} MB); "
          f"the app's old CUDA image was {OLD_IMAGE_GB} GB in all")

    # The two build-time commands, as the Dockerfile runs them: offline, from outside the source tree.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POSTGRES_", "DATABASE_", "ML_WORKER_"))}
    env.pop("PYTHONPATH", None)
    env.update(ML_WORKER_MODEL=str(model_dir), ML_WORKER_INDEX_DIR=str(tmp_path / "index"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    run([py, "-m", "worker", "index", "build"], cwd=tmp_path, env=env, timeout=1200)
    check = subprocess.run([py, "-m", "worker", "selfcheck"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=900)
    print("\nselfcheck:", check.stdout.strip())
    missing = missing_package_data(site)
    assert check.returncode == 0, (check.stdout + check.stderr[-2000:]
                                   + (f"\nthe installed package lacks these data files (pyproject.toml's "
                                      f"package-data does not include them): {missing}" if missing else ""))
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["result"]["loinc_code"] == "718-7"
    assert report["model"] == str(model_dir) and report["model_version"].startswith("all-MiniLM-L6-v2")
    imported_from = run([py, "-c", "import worker; print(worker.__file__)"], cwd=tmp_path, env=env).stdout
    assert imported_from.startswith(str(site)), f"worker imported from {imported_from}, not the installed package"

    assert total < 2 * 1024 * mb, "the worker's Python packages should stay well under 2 GB with CPU torch"
    assert not [m for m in missing if not m.endswith(".mako")], f"data files not installed: {missing}"
