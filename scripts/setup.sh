#!/usr/bin/env bash
# Install what genqlib needs, skipping what is already there; safe to run twice.
#   bash scripts/setup.sh          runtime (notebooks, package, JupyterLab with the widget extension)
#   bash scripts/setup.sh dev      runtime plus test tools (pytest, ruff, Playwright, Debian's Chromium)
# scripts/run.sh and scripts/test.sh source it and then use the $PYTHON it settled on.
# Order matters: torch first (an installed torch is kept), then the package, so pip never replaces
# the CPU build with a CUDA one. Uses $PYTHON (default: .venv/bin/python, created with access to the
# system's packages so an existing torch is reused; set GENQ_NO_VENV=1 to install into python3 itself).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"

if [ -z "${PYTHON:-}" ]; then
  if [ "${GENQ_NO_VENV:-0}" = "1" ] || [ -n "${CONDA_PREFIX:-}" ]; then
    PYTHON=python3
  else
    [ -x .venv/bin/python ] || python3 -m venv --system-site-packages .venv
    PYTHON=.venv/bin/python
  fi
fi

# 1. Fashion-MNIST from Debian, when apt is there and no other copy is configured.
if [ -z "${GENQ_DATA:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  else
    echo "setup: no apt-get as root; set GENQ_DATA or see docs/SETUP.md (Data)" >&2
  fi
fi

# 1b. For the browser tests (dev): Debian's Chromium, which Playwright drives through its executable_path
#     (Playwright's own browser download is never used). Without it those tests skip and say why.
if [ "$extras" = "dev" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  else
    echo "setup: no Chromium and no apt-get as root; the browser tests (tests/test_browser.py) will be skipped" >&2
  fi
fi

# 2. torch, alone and first; an existing install is kept whatever its version.
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet "torch==${GENQ_TORCH_VERSION:-2.13.0}"
fi

# 3. The package and the rest (pip skips what is satisfied).
spec="."
[ "$extras" = "dev" ] && spec=".[dev]"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e "$spec" 2>&1 \
  | grep -vE "^WARNING: (Location|Running pip as)" || true
"$PYTHON" -c "import genqlib, torch; print('setup: genqlib ready, torch', torch.__version__)"
