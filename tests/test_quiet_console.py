"""Loading the generator prints nothing: no progress bars, advertisements or warnings about parts genqlib never
uses."""

from __future__ import annotations

import os
import subprocess
import sys

from genqlib.paper.profiles import REPO_ROOT

SCRIPT = """
from genqlib import get_profile
from genqlib.generate import load_pipeline
pipe = load_pipeline(get_profile("ci").generator)
assert pipe.feature_extractor is None and pipe.safety_checker is None
print("loaded")
"""


def test_loading_the_mini_generator_is_quiet():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded"
    for noise in ("Loading", "accelerate", "torchvision", "ImageProcessor", "Warning", "warn"):
        assert noise not in done.stderr, f"{noise!r} in the console:\n{done.stderr}"
