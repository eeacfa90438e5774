"""The install story: genqlib imports with torch alone, and environment.yml agrees with the scripts."""

from __future__ import annotations

import re
import subprocess
import sys

from genqlib.paper.profiles import REPO_ROOT


def test_imports_without_torchvision_or_timm():
    code = (
        "import sys; sys.modules['torchvision'] = None; sys.modules['timm'] = None\n"
        "import genqlib, genqlib.zoo, genqlib.fashion_mnist, genqlib.paper.profiles\n"
        "assert 'torchvision' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_environment_yml_in_sync_with_setup_script():
    env = (REPO_ROOT / "environment.yml").read_text()
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    torch_pin = re.search(r"GENQ_TORCH_VERSION:-([\d.]+)", setup).group(1)
    assert f"torch=={torch_pin}" in env
    assert "python=3.11" in env and "-e .[dev]" in env
    assert env.index("torch==") < env.index("-e .[dev]"), "torch must come before the package"


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci


def test_readme_tables_are_generated_from_the_records():
    subprocess.run([sys.executable, "-m", "genqlib.paper.report", "--check"], check=True, cwd=REPO_ROOT)
