"""Fig. 4: data-scarce GenQ, a style token learned from a few real images per class (notebooks 03 and 06)."""

from __future__ import annotations

from collections.abc import Mapping

from genqlib.paper.ablation_table import ablation_setting, claim_of, first, points, rows_of, seeds_note, where
from genqlib.paper.common import (
    METHODS,
    MISSING,
    Claim,
    Metrics,
    bits,
    cell_claims,
    claims_table,
    group_top1,
    join,
    markdown_table,
    not_measured,
    section,
    seeded,
    setting,
)
from genqlib.paper.plots import Curves, log_ticks, mean_std

TITLE = "Fig. 4: data-scarce GenQ (a few real images per class)"
PAPER = (
    "QAT accuracy (ResNet-50, W3A3) climbs with the amount of real data; with one real image per class, GenQ's "
    "style-token data reaches 68.88%, about what real-data QAT needs some 300x more images for."
)
SETS = {"label": "GenQ label prompts (data-free)", "style": "GenQ style token (data-scarce)", "real": "real"}
PTQ = {
    "genq_data_free": "GenQ data-free",
    "genq_data_scarce": "GenQ data-scarce",
    "real_shots_only": "real shots only",
}
CURVE = {
    "real_shots": "real shots only",
    "genq_data_scarce": "GenQ data-scarce (style token)",
    "genq_data_free": "GenQ data-free (label prompts)",
}
HEADLINE = "style token > the real shots alone"
LABELS = "style token > label prompts"
CLAIMS = (
    (LABELS, "genq_data_scarce", "genq_data_free", 0.0),
    (HEADLINE, "genq_data_scarce", "real_shots_only", 0.0),
)
KEY = "data_scarce"


def ptq_rows(m3: dict | None) -> list[dict]:
    """Notebook 03's PTQ rows: one per teacher, bit widths, source and seed."""
    return (m3 or {}).get("ptq_rows") or []


def curve_claims(m6: dict | None) -> list[Claim]:
    """Notebook 06's curve: each style-token point against the same k real shots alone and against data-free
    GenQ; the noise is the wider seed spread of the two cells."""
    groups = points(m6, KEY, lambda r: (r.get("k") or 0, r["source"]))
    if not groups:
        return []
    at = where(m6[KEY])
    found = []
    for k in sorted(k for k, s in groups if s == "genq_data_scarce"):
        here = f"{at}, k = {k}"
        found.append(claim_of(HEADLINE, here, groups, (k, "genq_data_scarce"), (k, "real_shots")))
        found.append(claim_of(LABELS, here, groups, (k, "genq_data_scarce"), (0, "genq_data_free")))
    return found


def claims(runs: Metrics) -> list[Claim]:
    """The style token against label prompts and against the real shots alone: notebook 03, then 06's curve."""
    rows = ptq_rows(runs.get("03"))
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), r["source"]))
    columns = list(dict.fromkeys((r["teacher"], bits(r)) for r in rows))
    return cell_claims(groups, columns, CLAIMS) + curve_claims(runs.get("06"))


def sets_table(m3: dict) -> str:
    """BN distance and class fidelity of the label-prompt, style-token and real sets."""
    body = [
        [name, f"{m3[key]['bn_distance']:.2f}", f"{100 * m3[key]['class_fidelity']:.1f}%"]
        for key, name in SETS.items()
        if key in m3
    ]
    return markdown_table(["set", "BN distance", "class fidelity"], body)


def ptq_setting(m3: dict) -> str:
    """The PTQ line of notebook 03: method, calibration images, iterations per block and seeds."""
    s = m3.get("ptq_setting") or {}
    seeds = s.get("seeds") or {r.get("seed") for r in ptq_rows(m3)}
    parts = [
        METHODS.get(s.get("method"), s.get("method") or ""),
        f"{s['n_calib']:,} calibration images" if s.get("n_calib") else "",
        f"{s['iters']:,} reconstruction iterations per block" if s.get("iters") else "",
        seeds_note(len(seeds)),
    ]
    return "PTQ: " + " · ".join(p for p in parts if p)


def ptq_table(m3: dict) -> str:
    """PTQ top-1 per teacher (and bit widths) calibrated on each set, mean ± std over seeds."""
    rows = ptq_rows(m3)
    groups = group_top1(rows, lambda r: (r["teacher"], bits(r), r["source"]))
    columns = list(dict.fromkeys((r["teacher"], bits(r)) for r in rows))
    widths = list(dict.fromkeys(b for _, b in columns))
    label = (lambda t, b: f"`{t}`") if len(widths) == 1 else (lambda t, b: f"`{t}` {b}")
    body = [[label(t, b), *(seeded(groups.get((t, b, s))) for s in PTQ)] for t, b in columns]
    return markdown_table([f"{'/'.join(widths)} PTQ top-1 (%)", *PTQ.values()], body)


def notebook03(m3: dict | None) -> str:
    """Notebook 03's part: the sets' quality and PTQ on each."""
    if not m3 or not any(k in m3 for k in SETS):
        return not_measured("Fig. 4, notebook 03 (style token, sets, PTQ)", "03")
    learn = f"style token learned in {m3['learn_seconds'] / 60:.1f} min" if "learn_seconds" in m3 else ""
    shots = f"{m3['k_shots']} real image(s) per class" if "k_shots" in m3 else ""
    scored = f"BN distance and class fidelity by `{m3['teacher']}`" if "teacher" in m3 else ""
    ptq = join(ptq_setting(m3), ptq_table(m3)) if ptq_rows(m3) else ""
    return join(setting(m3, shots, learn, scored), sets_table(m3), ptq)


def curve_table(m6: dict | None) -> str:
    """Notebook 06's curve: rows = real images per class k, columns = source; cells top-1 mean ± std over
    seeds and the images used."""
    rows = rows_of(m6, KEY)
    if not rows:
        return not_measured("Fig. 4, notebook 06 (the k-shot curve)", "06")
    groups = points(m6, KEY, lambda r: (r.get("k") or 0, r["source"]))
    sources = [s for s in CURVE if any(r["source"] == s for r in rows)]

    def cell(k: int, source: str) -> str:
        n = first(rows, lambda r: (r.get("k") or 0, r["source"]) == (k, source), "n")
        return MISSING if n is None else f"{seeded(groups.get((k, source)))} (n={n:,})"

    ks = sorted({r.get("k") or 0 for r in rows})
    body = [[str(k) if k else "0 (data-free)", *(cell(k, s) for s in sources)] for k in ks]
    table = markdown_table([f"`{where(m6[KEY])}` k real per class", *(CURVE[s] for s in sources)], body)
    return join(ablation_setting(m6, m6[KEY]), table)


def render(runs: Metrics) -> str:
    """Fig. 4 as markdown: notebook 03's sets and PTQ, notebook 06's k-shot curve, then the claims."""
    m3, m6 = runs.get("03"), runs.get("06")
    return section(
        join(notebook03(m3), curve_table(m6)),
        claims_table(claims(runs)),
        PAPER,
        "03",
        "06",
    )


# ---------------------------------------------------------------- the plot (notebook 06)


ANALYSIS = "data_scarce"  # notebook 06's key


def plot(c: Curves, rows: list[dict], fp: Mapping, teacher: str) -> tuple[float | None, str]:
    """Top-1 against real images per class: the shots alone and the style token, data-free GenQ as a band."""
    groups = group_top1(rows, lambda r: (r.get("k") or 0, r["source"]))
    for source, label in (("real_shots", "real shots alone"), ("genq_data_scarce", "style token (GenQ)")):
        c.series(source, sorted((k, v) for (k, s), v in groups.items() if s == source), label)
    if (0, "genq_data_free") in groups:
        m, s = mean_std(groups[0, "genq_data_free"])
        c.ax.axhline(m, color="C2", linestyle=":", label=f"data-free GenQ {m:.1f}")
        if s:
            c.ax.axhspan(m - s, m + s, color="C2", alpha=0.15)
        c.curve["genq_data_free"] = [(0, m, s)]
        c.marks.append((min(c.xs() or [1]), "data-free", m))
    c.ax.set_xscale("log")
    log_ticks(c.ax, c.xs())
    c.ax.set_xlabel("real images per class (k)")
    return fp.get(teacher), teacher
