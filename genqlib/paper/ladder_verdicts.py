"""The generator ladder's verdicts, table and plot, computed from its record (``genqlib.paper.generator_ladder``).

Two questions of issue #35 item 3, each judged with the project's rule (``genqlib.paper.verdict``: a gap counts
beyond max(3 std, range) of the compared cells' seed spreads), the measured rungs ordered from the worst to the
best generator by class fidelity (the fraction of a rung's images the teacher gives the prompted class):

(a) does GenQ (filtered) cross BN inversion as the generator improves? One claim "GenQ > BN inversion" per
    rung; "crosses" when the best rung resolves above BN inversion and the worst does not.
(b) does the filter matter more for a worse generator? The claim "filter gain (filtered - unfiltered) at the
    worst rung > at the best", its noise the widest seed spread of the four cells.

Fewer than two measured rungs answer "too few rungs" (naming the skipped ones), never a claim.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from genqlib.paper.common import Claim, claims_table, markdown_table, signed
from genqlib.paper.plots import Curves, image_grid, save
from genqlib.paper.verdict import AGAINST, RESOLVED, WITHIN, spread_of, verdict, widest

MIN_RUNGS = 2
CROSSES, ABOVE, BELOW, NOT_JUDGED, TOO_FEW = (
    "crosses",
    "above at every rung",
    "does not cross",
    "not judged",
    "too few rungs",
)
# The plot's panels: the record's metric key and its axis label.
METRICS = (
    ("class_fidelity", "class fidelity (teacher's class = prompted)"),
    ("bn_distance", "BN distance to the teacher's statistics (lower: closer)"),
    ("hf_share_ratio", "high-frequency share / real images'"),
    ("kid", "KID to real images, teacher features (lower: closer)"),
)


def read_ladder_record(path: str | Path) -> dict | None:
    """The ladder record at ``path`` (its JSON), or None when there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def measured(record: dict) -> list[dict]:
    """The measured rungs, worst to best generator: ascending class fidelity."""
    rungs = [r for r in record["rungs"] if r.get("status") == "measured"]
    return sorted(rungs, key=lambda r: r["metrics"]["class_fidelity"])


def skipped_note(record: dict) -> str:
    """``skipped: a (why); b (why)``, or an empty string."""
    skipped = [f"{r['rung']} ({r['reason']})" for r in record["rungs"] if r.get("status") == "skipped"]
    return "skipped: " + "; ".join(skipped) if skipped else ""


def _where(rung: dict) -> str:
    return f"{rung['rung']} (class fidelity {rung['metrics']['class_fidelity']:.1%})"


def _gap(a: dict, b: dict) -> float:
    return a["mean"] - b["mean"]


def crossing_claims(record: dict) -> list[Claim]:
    """ "GenQ > BN inversion" at each measured rung, worst generator first."""
    bn = record["baselines"]["bn_inversion"]
    return [
        Claim(
            "GenQ (filtered) > BN inversion",
            _where(r),
            _gap(r["top1"]["genq"], bn),
            widest(spread_of(r["top1"]["genq"]["values"]), spread_of(bn["values"])),
        )
        for r in measured(record)
    ]


def filter_claims(record: dict) -> list[Claim]:
    """ "GenQ filtered > unfiltered" at each rung, and the filter gain at the worst rung against the best."""
    rungs = measured(record)
    found = []
    for r in rungs:
        f, u = r["top1"]["genq"], r["top1"]["genq_unfiltered"]
        found.append(Claim("GenQ filtered > unfiltered", _where(r), _gap(f, u), widest(*_spreads(f, u))))
    if len(rungs) >= MIN_RUNGS:
        worst, best = rungs[0]["top1"], rungs[-1]["top1"]
        gap = _gap(worst["genq"], worst["genq_unfiltered"]) - _gap(best["genq"], best["genq_unfiltered"])
        cells = (worst["genq"], worst["genq_unfiltered"], best["genq"], best["genq_unfiltered"])
        where = f"{rungs[0]['rung']} vs {rungs[-1]['rung']}"
        found.append(Claim("filter gain: worst rung > best rung", where, gap, widest(*_spreads(*cells))))
    return found


def _spreads(*cells: dict) -> list:
    return [spread_of(c["values"]) for c in cells]


def _too_few(record: dict, question: str) -> dict | None:
    n = len(measured(record))
    if n >= MIN_RUNGS:
        return None
    why = f"{n} rung(s) measured, {MIN_RUNGS} needed; " + (skipped_note(record) or "none skipped")
    return {"question": question, "answer": TOO_FEW, "detail": why}


def crossing_verdict(record: dict) -> dict:
    """Question (a): ``answer`` is "crosses", "above at every rung", "does not cross", "not judged" (a cell
    without seed spread) or "too few rungs"; ``detail`` says where and why."""
    question = "does GenQ (filtered) cross BN inversion as the generator improves (by class fidelity)?"
    few = _too_few(record, question)
    if few:
        return few
    claims = crossing_claims(record)
    states = [verdict(c.gap, c.spread, c.margin) for c in claims]
    if any(v not in (RESOLVED, AGAINST, WITHIN) for v in states):
        return {"question": question, "answer": NOT_JUDGED, "detail": "a cell has no seed spread (1 seed)"}
    above = [v == RESOLVED for v in states]
    names = [c.where for c in claims]
    if all(above):
        detail = f"GenQ resolves above BN inversion already at the worst rung, {names[0]}"
        return {"question": question, "answer": ABOVE, "detail": detail}
    if above[-1]:
        first = max(i for i, a in enumerate(above) if not a) + 1  # from here on every rung is above
        detail = f"below or within noise up to {names[first - 1]}, above from {names[first]}"
        return {"question": question, "answer": CROSSES, "detail": detail}
    detail = f"at the best rung, {names[-1]}, GenQ is {states[-1]} against BN inversion (gap {claims[-1].gap:+.2f})"
    return {"question": question, "answer": BELOW, "detail": detail}


def filter_verdict(record: dict) -> dict:
    """Question (b): ``answer`` is the verdict of "filter gain at the worst rung > at the best" ("resolved
    (paper's direction)" = yes, the filter matters more for the worse generator), or "too few rungs"."""
    question = "does the filter's gain (filtered - unfiltered) grow for a worse generator?"
    few = _too_few(record, question)
    if few:
        return few
    claim = filter_claims(record)[-1]
    answer = verdict(claim.gap, claim.spread, claim.margin)
    detail = f"gain at the worst rung minus gain at the best: {signed(claim.gap)} ({claim.where})"
    return {"question": question, "answer": answer, "detail": detail}


def verdicts(record: dict) -> dict:
    """Both verdicts and their claims (as rows), for the record."""
    rows = [
        {"claim": c.claim, "where": c.where, "gap": c.gap, "verdict": verdict(c.gap, c.spread, c.margin)}
        for c in crossing_claims(record) + filter_claims(record)
    ]
    return {"crossing": crossing_verdict(record), "filter": filter_verdict(record), "claims": rows}


def _cell(c: dict) -> str:
    return f"{c['mean']:.2f} ± {c['std']:.2f} (n={c['n']})"


def render(record: dict) -> str:
    """The ladder as markdown: per rung its metrics and top-1, the baselines, both claim tables, the verdicts."""
    body = []
    for r in measured(record):
        m, t = r["metrics"], r["top1"]
        bn = "–" if m["bn_distance"] is None else f"{m['bn_distance']:.3g}"
        row = [r["rung"], f"{m['class_fidelity']:.1%}", bn, f"{m['hf_share_ratio']:.3f}", f"{m['kid']:.3g}"]
        body.append(row + [_cell(t["genq"]), _cell(t["genq_unfiltered"])])
    header = ["rung", "class fidelity", "BN distance", "HF share / real", "KID", "GenQ top-1", "unfiltered"]
    base = record["baselines"]
    lines = [
        markdown_table(header, body),
        f"Real data {_cell(base['real'])} · BN inversion {_cell(base['bn_inversion'])} · "
        f"FP {record['fp_top1']:.2f}",
        skipped_note(record),
        claims_table(crossing_claims(record) + filter_claims(record)),
    ]
    v = record.get("verdicts") or verdicts(record)
    lines += [f"- {v[k]['question']} **{v[k]['answer']}**: {v[k]['detail']}" for k in ("crossing", "filter")]
    return "\n\n".join(x for x in lines if x)


def plot(record: dict, highlight: str | None = None) -> Figure:
    """Downstream top-1 (mean ± std over seeds) against each quality metric, one panel per metric: GenQ
    filtered and unfiltered per rung, real data and BN inversion as horizontal bands (mean ± std).
    ``highlight``: a rung (its spec) ringed in every panel, its label in bold."""
    rungs = measured(record)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.3 * len(METRICS), 3.6), sharey=True, squeeze=False)
    for ax, (key, label) in zip(axes[0], METRICS, strict=True):
        for source, color, name in (("real", "C2", "real data"), ("bn_inversion", "C3", "BN inversion")):
            c = record["baselines"][source]
            ax.axhspan(c["mean"] - c["std"], c["mean"] + c["std"], color=color, alpha=0.15, lw=0)
            ax.axhline(c["mean"], color=color, lw=1, ls="--", label=name)
        at = [r for r in rungs if r["metrics"].get(key) is not None]
        curves = Curves(ax)
        for source, fmt, name in (("genq", "C0o", "GenQ filtered"), ("genq_unfiltered", "C1s", "unfiltered")):
            curves.series(source, [(r["metrics"][key], r["top1"][source]["values"]) for r in at], name, fmt)
            for r in (r for r in at if r["rung"] == highlight):  # the picked rung's point, ringed
                ax.plot(
                    r["metrics"][key], r["top1"][source]["mean"], "o", ms=13, mfc="none", mec="k", mew=1.2
                )
        for r in at:
            picked = r["rung"] == highlight
            ax.annotate(
                r["tag"],
                (r["metrics"][key], r["top1"]["genq"]["mean"]),
                fontsize=7 if picked else 6,
                rotation=20,
                weight="bold" if picked else None,
            )
        if not at:
            ax.text(0.5, 0.5, f"{key}: not measured", transform=ax.transAxes, ha="center", fontsize=7)
        ax.set_xlabel(label, fontsize=8)
    axes[0][0].set_ylabel("top-1 (%), mean ± std over seeds")
    axes[0][0].legend(fontsize=6, loc="best")
    s = record["settings"]
    title = (
        f"profile {s['profile']}: {s['teacher']} W{s['w_bits']}A{s['a_bits']} {s['method']}, "
        f"{s['n_calib']} calibration images, {s['iters']} iterations per block, {len(s['seeds'])} seed(s)"
    )
    fig.suptitle("\n".join(x for x in (title, skipped_note(record)) if x), fontsize=8)
    fig.tight_layout()
    return fig


def samples_figure(record: dict, images: dict[str, torch.Tensor]) -> Figure:
    """One row of images per measured rung, worst to best generator, labelled with its class fidelity:
    ``images`` maps a rung's spec to its images (N, C, H, W) in [0, 1]."""
    rungs = [r for r in measured(record) if r["rung"] in images]
    labels = [f"{r['rung']}\n{r['metrics']['class_fidelity']:.0%} fidelity" for r in rungs]
    return image_grid([images[r["rung"]] for r in rungs], labels, "each rung's first images, one per class")


def save_plot(record: dict, folder: Path, name: str) -> Path:
    """Draw ``plot(record)`` and save it as ``folder/name.png`` and ``.svg``; returns the PNG's path."""
    fig = plot(record)
    try:
        return save(fig, Path(folder), name)
    finally:
        plt.close(fig)


def save_samples(record: dict, images: dict[str, torch.Tensor], folder: Path, name: str) -> Path:
    """Draw ``samples_figure(record, images)`` and save it as ``folder/name.png`` and ``.svg``."""
    fig = samples_figure(record, images)
    try:
        return save(fig, Path(folder), name)
    finally:
        plt.close(fig)


LADDER_TITLE = "Generator quality as an axis (the generator ladder)"


def results_section(record: dict | None, command: str) -> str:
    """docs/RESULTS.md's ladder section: what was run, its plot and sample images, its table, claims and
    verdicts; without a record, the command that makes it."""
    if record is None:
        return f"Not recorded yet: `{command}` writes it."
    s = record["settings"]
    lines = [
        f"Made by `{record['command']}` (engine {record.get('engine', 'before 4')}; {s['teacher']} "
        f"W{s['w_bits']}A{s['a_bits']} {s['method']}, {s['n_calib']} calibration images, {s['iters']} "
        f"iterations per block, seeds {s['seeds']}). The rungs are ordered by class fidelity, measured before "
        "any PTQ run and independent of it; `genqlib.ui.ladder_explorer(record)` is a picker over the same record.",
        f"![the ladder](../{record['figure']})",
    ]
    if record.get("samples_figure"):
        lines.append(f"![each rung's images](../{record['samples_figure']})")
    return "\n\n".join([*lines, render(record)])
