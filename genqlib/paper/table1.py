"""Table 1: the cost of making calibration images and their BN distance (notebook 06)."""

from __future__ import annotations

from collections.abc import Mapping

from genqlib.paper.common import (
    MISSING,
    Claim,
    Metrics,
    claims_table,
    diff,
    join,
    markdown_table,
    not_measured,
    section,
    setting,
)
from genqlib.paper.plots import Curves
from genqlib.paper.profiles import get_profile

TITLE = "Table 1: cost and quality of the calibration images"
PAPER = (
    "for 1,000 ImageNet images, text-to-image generation takes 24 min against 152 min for GENIE's image "
    "inversion, and GenQ images' BN distance is close to that of inversion images, which minimize it directly."
)
NAMES = {
    "genq_unfiltered": "GenQ, unfiltered",
    "genq": "GenQ (text-to-image + filter)",
    "bn_inversion": "BN inversion",
    "real": "real",
}
HEADLINE = "GenQ faster than BN inversion (s per 1,000)"
# a sampler setting "holds" fidelity within 1 pt of the default's (both paired, same seeds)
FIDELITY_SLACK = 0.01


def sources(m: dict | None) -> dict[str, dict]:
    """The ``generation_cost`` rows by source."""
    return {r["source"]: r for r in (((m or {}).get("generation_cost") or {}).get("rows") or [])}


def claims(runs: Metrics) -> list[Claim]:
    """GenQ's time per 1,000 images against BN inversion's; the filter's drop in BN distance. Timed once."""
    rows = sources(runs.get("06"))
    teacher = ((runs.get("06") or {}).get("generation_cost") or {}).get("teacher", "teacher")
    genq, inversion, unfiltered = (rows.get(s) or {} for s in ("genq", "bn_inversion", "genq_unfiltered"))
    return [
        Claim(HEADLINE, "all images", diff(inversion.get("seconds_per_1000"), genq.get("seconds_per_1000"))),
        Claim(
            "filter lowers BN distance",
            teacher,
            diff(unfiltered.get("bn_distance"), genq.get("bn_distance")),
        ),
    ]


def bn_cell(row: dict) -> str:
    """BN distance ± its std over batches, or a dash."""
    if row.get("bn_distance") is None:
        return MISSING
    std = row.get("bn_distance_std")
    return f"{row['bn_distance']:.2f}" + ("" if std is None else f" ± {std:.2f}")


def solver(bench: dict | None) -> str:
    """``bench solver``'s record (``figures/bench/solver.json``): images/s and class fidelity per sampler and
    step count, the fastest setting that holds the default's fidelity, and the step count where BN inversion's
    loss has converged (empty without a record)."""
    if not bench:
        return ""
    ref = next(
        r
        for r in bench["rows"]
        if (r["sampler"], r["steps"]) == (bench["reference"]["sampler"], bench["reference"]["steps"])
    )
    body = [
        [r["sampler"], str(r["steps"]), f"{r['images_per_s']:.1f}", f"{100 * r['mean_fidelity']:.1f}"]
        for r in bench["rows"]
    ]
    holding = [r for r in bench["rows"] if r["mean_fidelity"] >= ref["mean_fidelity"] - FIDELITY_SLACK]
    best = max(holding, key=lambda r: r["images_per_s"])
    m = bench.get("machine", {})
    summary = (
        f"Synthesis speed (`python -m genqlib.bench solver`, {bench['n_per_class']} images per class, "
        f"batch {bench['batch_size']}, {m.get('threads', '?')} thread(s), load {m.get('load_1min', '?')}): "
        f"the fastest setting within {100 * FIDELITY_SLACK:.0f} pt of the default's class fidelity is "
        f"{best['sampler']} at {best['steps']} steps, {best['images_per_s']:.1f} images/s against "
        f"{ref['images_per_s']:.1f} for the default ({ref['sampler']}, {ref['steps']} steps)."
    )
    notes = []
    for teacher, inv in bench.get("bn_inversion", {}).items():
        k, per_step = inv["converged_iters"], inv["seconds_per_1000_per_step"]
        curve = ", ".join(f"{r['iters']}: {r['loss']:.3g}" for r in inv["rows"])
        done = (
            f"doubling the steps gains less than {100 * inv['converged_within']:.0f}% from {k} steps on "
            f"({k * per_step:.0f} s per 1,000 images)"
            if k
            else f"the loss is still falling at {inv['iters']} steps"
        )
        runs = get_profile(bench.get("profile", "mini")).bn_inversion.iters  # today's, not the bench's
        notes.append(
            f"- BN inversion on `{teacher}` ({inv['n']} images; loss by step {curve}): {done}; the profile runs "
            f"{runs} ({runs * per_step:.0f} s per 1,000)."
        )
    table = markdown_table(["sampler", "steps", "images/s", "class fidelity (%)"], body)
    return join(summary, table, "\n".join(notes))


def render(runs: Metrics) -> str:
    """Table 1 as markdown: seconds per 1,000 images and BN distance per source, then the claims."""
    m = runs.get("06")
    rows = sources(m)
    if not rows:
        return not_measured(TITLE, "06")
    cost = m["generation_cost"]
    body = [
        [
            NAMES.get(s, s),
            MISSING if r.get("seconds_per_1000") is None else f"{r['seconds_per_1000']:.1f}",
            bn_cell(r),
            MISSING if r.get("n") is None else f"{r['n']:,}",
        ]
        for s, r in rows.items()
    ]
    threads = f"{cost['threads']} CPU thread(s)" if "threads" in cost else ""
    teacher = f"BN distance by `{cost['teacher']}` (± std over batches)" if "teacher" in cost else ""
    return section(
        join(
            setting(m, threads, teacher),
            markdown_table(["data", "seconds per 1,000 images", "BN distance", "images"], body),
            solver(runs.get("bench/solver")),
        ),
        claims_table(claims(runs)),
        PAPER,
        "06",
    )


# ---------------------------------------------------------------- the plot (notebook 06)


ANALYSIS = "generation_cost"  # notebook 06's key


def plot(c: Curves, rows: list[dict], fp: Mapping, teacher: str) -> tuple[float | None, str]:
    """Bars of each source's BN distance to ``teacher`` (± std over batches); no top-1 axis."""
    c.ax.bar(
        [r["source"] for r in rows],
        [r["bn_distance"] for r in rows],
        yerr=[r.get("bn_distance_std", 0.0) for r in rows],
        capsize=4,
    )
    c.ax.set_ylabel(f"BN distance to {teacher} (± std over batches)")
    c.ax.tick_params(axis="x", labelsize=7, rotation=20)
    c.curve["bn_distance"] = [(r["source"], r["bn_distance"], r.get("bn_distance_std", 0.0)) for r in rows]
    return fp.get(teacher), teacher
