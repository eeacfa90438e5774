#!/usr/bin/env bash
# Open the workbench in JupyterLab on docs/START_HERE.md (which notebook teaches what, the executed copies),
# with the notebooks, a kernel that imports this checkout's genqlib, and widgets on.
#   bash scripts/lab.sh               installs what is missing, then serves http://127.0.0.1:8888/lab
#   GENQ_LAB_PORT=9999 GENQ_LAB_IP=0.0.0.0 bash scripts/lab.sh    another port / listen on every interface
# Safe to run twice: when a JupyterLab already serves this checkout, its address is printed and nothing new
# starts. Stop it with Ctrl-C in the terminal that started it.
source "$(dirname "$0")/setup.sh"
root="$(pwd)"

running="$("$PYTHON" - "$root" <<'PY'
import json, subprocess, sys
out = subprocess.run([sys.executable, "-m", "jupyter", "server", "list", "--jsonlist"],
                     capture_output=True, text=True).stdout
for server in json.loads(out or "[]"):
    if server.get("root_dir", server.get("notebook_dir")) == sys.argv[1]:
        print(f"{server['url'].rstrip('/')}/lab/tree/docs/START_HERE.md?token={server.get('token', '')}")
        break
PY
)"
if [ -n "$running" ]; then
  echo "lab: JupyterLab already serves $root: $running"
  exit 0
fi

"$PYTHON" -c "import jupyterlab, ipywidgets, jupyterlab_widgets" \
  || { echo "lab: JupyterLab or the widget extension is missing; run bash scripts/setup.sh" >&2; exit 1; }
# the executed copies are results: read-only, so JupyterLab opens them so and a save cannot overwrite one
# (git does not keep the write bit, so this runs at every open; idempotent)
"$PYTHON" -m genqlib.paper.executed_copies "$root/figures"
# a file without write bits opens read-only also when the lab runs as root (scripts/lab_contents.py)
args=(--no-browser --ServerApp.root_dir="$root" --LabApp.default_url=/lab/tree/docs/START_HERE.md
      --ServerApp.contents_manager_class=lab_contents.ModeBitsFileManager
      --ServerApp.ip="${GENQ_LAB_IP:-127.0.0.1}" --ServerApp.port="${GENQ_LAB_PORT:-8888}")
[ "$(id -u)" = "0" ] && args+=(--allow-root)
echo "lab: starting JupyterLab in $root (kernel: $PYTHON with genqlib; open the URL printed below)"
PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m jupyterlab "${args[@]}"
