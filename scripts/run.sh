#!/usr/bin/env bash
# The main job: install what is missing, then execute the notebooks in order with papermill on the
# profile in $PROFILE (default mini), writing executed copies and figures under figures/.
source "$(dirname "$0")/setup.sh"
"$PYTHON" -m genqlib.paper.run_notebooks --profile "${PROFILE:-mini}" "$@"
