"""Wall time of each notebook in the last full run of each profile (``figures/run_times-<profile>.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from genqlib.paper.common import FIGURES, MISSING, join, markdown_table
from genqlib.paper.profiles import REPO_ROOT, get_profile

PROFILES = ("ci", "mini")


def record_path(profile: str, figures: Path = FIGURES) -> Path:
    """Where a full run of ``profile`` records its times: its figures folder, relative to ``figures``."""
    folder = get_profile(profile).figures_dir.relative_to(REPO_ROOT / "figures")
    return figures / folder / f"run_times-{profile}.json"


def records(figures: Path = FIGURES) -> dict[str, dict]:
    """The recorded full runs by profile (profiles never run fully are left out of the columns)."""
    paths = {p: record_path(p, figures) for p in PROFILES}
    return {p: json.loads(path.read_text()) for p, path in paths.items() if path.exists()}


def minutes(seconds: float | None) -> str:
    """Seconds as minutes with one decimal, or a dash."""
    return MISSING if seconds is None else f"{seconds / 60:.1f}"


def conditions(profile: str, record: dict) -> list[str]:
    """How a run ran: cores, threads, grid workers, cache state, resumes (a resumed notebook reused its cache, so reads low)."""
    cache = {True: "empty", False: "not empty (steps may come from it)"}.get(
        record.get("cold_start"), "not recorded"
    )
    return [
        f"`{profile}`",
        str(record.get("cpu_count", MISSING)),
        str(record.get("threads", MISSING)),
        str(record.get("grid_workers", MISSING)),
        cache,
        str(record.get("resumed", 0)),
    ]


def table(figures: Path = FIGURES) -> str:
    """Minutes per notebook and in total per profile, then the conditions each run recorded."""
    found = records(figures)
    if not found:
        return markdown_table(
            ["run times", "status"], [["full runs", f"{MISSING} not measured: `bash scripts/run.sh`"]]
        )
    notebooks = sorted({nb for r in found.values() for nb in r["notebooks"]})
    body = [[nb, *(minutes(r["notebooks"].get(nb)) for r in found.values())] for nb in notebooks]
    body.append(["**all**", *(f"**{minutes(r.get('total_seconds'))}**" for r in found.values())])
    times = markdown_table(["notebook", *(f"`{p}` (min)" for p in found)], body)
    header = [
        "profile",
        "CPU cores",
        "threads",
        "PTQ/QAT workers (1 thread each)",
        "cache at start",
        "resumes",
    ]
    return join(times, markdown_table(header, [conditions(p, r) for p, r in found.items()]))


def summary(profile: str = "mini", figures: Path = FIGURES) -> str:
    """One sentence on the last full run of ``profile``: its minutes, cores, cache state and CPU, so that the
    README and SETUP quote the record instead of a typed-in number."""
    record = records(figures).get(profile)
    if record is None:
        return f"The `{profile}` run has not been timed yet: `bash scripts/run.sh`."
    m = record.get("machine", {})
    cache = {True: "an empty cache", False: "a cache that was not empty"}.get(
        record.get("cold_start"), "a cache in an unrecorded state"
    )
    cpu = ", ".join(str(m[k]) for k in ("cpu", "cpu_kind") if m.get(k)) or "CPU not recorded"
    finished = str(record.get("finished", ""))[:10]
    return (
        f"The last full `{profile}` run took **{minutes(record.get('total_seconds'))} minutes** on "
        f"{record.get('cpu_count', MISSING)} CPU cores from {cache} ({cpu}; torch {m.get('torch', MISSING)}"
        + (f"; {finished}" if finished else "")
        + f"), `{record_path(profile, figures).relative_to(figures.parent)}`."
    )
