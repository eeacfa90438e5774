"""docs/START_HERE.md's table: which notebook teaches what, which control in it is live, and how long it ran
on the machine that made the committed results (``figures/run_times-<profile>.json``, never a typed number).
"""

from __future__ import annotations

from genqlib.paper.common import MISSING, markdown_table
from genqlib.paper.profiles import REPO_ROOT
from genqlib.paper.run_times import minutes, record_path, records

# notebook: (what it teaches, what a learner can move in it)
NOTEBOOKS = {
    "01_generate": (
        "a text-to-image model makes calibration images from class prompts; how close they are to real ones",
        "prompt playground: type a prompt, see samples",
    ),
    "02_filter": (
        "GenQ's two filters (energy, then BN sensitivity) and what each drops, per class",
        "filter explorer: drag the drop shares, see histograms, kept/rejected images, BN distance",
    ),
    "03_token_inversion": (
        "a style token learned from a few real images steers the generator (data-scarce GenQ)",
        "token compare: the same seed with and without the token",
    ),
    "04_ptq": (
        "post-training quantization (BRECQ/QDrop/Genie-M) calibrated on real, noise, BN-inversion and GenQ images",
        "PTQ explorer: pick teacher, bits, method, sources; compute a missing run",
    ),
    "05_qat": ("quantization-aware training: LSQ on real data versus GenQ's QAT on synthetic data", "none"),
    "06_ablations": (
        "how many images, how hard to filter, across teachers, with k real shots, and at what cost",
        "ablation explorer: pick an analysis",
    ),
}


def table(profile: str = "mini") -> str:
    """One row per notebook: what it teaches, its live control, and its minutes in the last full ``ci`` and
    ``profile`` runs on 2 cores (a dash where none was recorded)."""
    found = records()
    runs = [p for p in ("ci", profile) if p in found]
    header = ["notebook", "executed copy", "teaches", "live control", *(f"`{p}` (min)" for p in runs)]
    body = [
        [f"[{nb}](../notebooks/{nb}.ipynb)", f"[{nb}](../figures/{nb}/{nb}.ipynb)", teaches, live]
        + [minutes(found[p]["notebooks"].get(nb)) for p in runs]
        for nb, (teaches, live) in NOTEBOOKS.items()
    ]
    cores = sorted({str(found[p].get("cpu_count", MISSING)) for p in runs})
    sources = ", ".join(f"`{record_path(p).relative_to(REPO_ROOT)}`" for p in runs) or "no run recorded yet"
    return f"{markdown_table(header, body)}\n\nMinutes on {'/'.join(cores) or MISSING} CPU cores: {sources}."
