"""The Pulumi project file and the program directory's shape."""

from __future__ import annotations

import ast

import yaml
from mlw_mocks import PROGRAM_DIR, PROJECT, REPO_ROOT


def test_pulumi_yaml():
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    assert project["main"].rstrip("/") == "platform"


def test_program_dir_is_not_a_package_and_shadows_nothing():
    import sys

    assert not (PROGRAM_DIR / "__init__.py").exists()
    modules = sorted(p.stem for p in PROGRAM_DIR.glob("*.py") if p.name != "__main__.py")
    assert modules and all(m.startswith("mlw_") for m in modules), modules
    assert not set(modules) & set(sys.stdlib_module_names)


def test_main_is_short_and_reads_like_the_diagram():
    """__main__.py reads config once, composes the components, exports; it creates no AWS resource itself."""
    source = (PROGRAM_DIR / "__main__.py").read_text()
    tree = ast.parse(source)
    assigned = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)]
    for name in ("cfg", "queues", "images", "iam", "service", "scaling", "alarms", "params"):
        assert name in assigned, name
    assert assigned.index("queues") < assigned.index("service") < assigned.index("scaling")
    assert "pulumi_aws" not in source and "PlatformConfig.load()" in source
    assert len(source.splitlines()) < 80


def test_stack_file_placeholders_are_marked():
    text = (REPO_ROOT / "Pulumi.production.yaml").read_text()
    config = yaml.safe_load(text)["config"]
    assert config[f"{PROJECT}:vpcId"].startswith("vpc-0123")
    assert "TO-FILL" in text
