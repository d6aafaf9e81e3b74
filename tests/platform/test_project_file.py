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
    for name in ("cfg", "checked", "queues", "images", "iam", "network", "service", "scaling", "alarms", "dashboard",
                 "params"):
        assert name in assigned, name
    # Config and preflight first: nothing is created before they pass.
    assert assigned[:2] == ["cfg", "checked"]
    assert assigned.index("queues") < assigned.index("network") < assigned.index("service") < assigned.index("scaling")
    assert "pulumi_aws" not in source and "PlatformConfig.load()" in source
    assert len(source.splitlines()) < 80


def test_one_component_per_module():
    """Each module holds at most one ComponentResource (pure helpers live beside it)."""
    for path in PROGRAM_DIR.glob("mlw_*.py"):
        tree = ast.parse(path.read_text())
        components = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
                      and any(ast.unparse(b) == "pulumi.ComponentResource" for b in n.bases)]
        assert len(components) <= 1, (path.name, components)


def test_modules_opsctl_reads_need_no_pulumi():
    """`opsctl scaling simulate --local` loads the config and the scaling rules without the Pulumi SDK."""
    for name in ("mlw_config.py", "mlw_scaling_rules.py"):
        tree = ast.parse((PROGRAM_DIR / name).read_text())
        top = [a.name for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
               for a in n.names] + [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert not [m for m in top if m and m.startswith("pulumi")], name


def test_stack_file_points_to_the_deployment_doc():
    text = (REPO_ROOT / "Pulumi.production.yaml").read_text()
    assert "docs/deployment.md" in text and (REPO_ROOT / "docs" / "deployment.md").is_file()
