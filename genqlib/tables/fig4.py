"""Fig. 4: data-scarce GenQ, a style token learned from a few real images per class (notebooks 03 and 06)."""

from __future__ import annotations

from genqlib.tables.ablation import teacher_noise, where
from genqlib.tables.common import (
    MISSING,
    Claim,
    Metrics,
    cell_claims,
    claims_table,
    diff,
    group_top1,
    join,
    markdown_table,
    not_measured,
    pct,
    section,
    seeded,
    setting,
)

TITLE = "Fig. 4: data-scarce GenQ (a few real images per class)"
PAPER = (
    "QAT accuracy (ResNet-50, W3A3) climbs with the amount of real data; with one real image per class, GenQ's "
    "style-token data reaches 68.88%, about what real-data QAT needs some 300x more images for."
)
SETS = {"label": "GenQ label prompts (data-free)", "style": "GenQ style token (data-scarce)", "real": "real"}
PTQ = {"genq": "GenQ data-free", "genq_data_scarce": "GenQ data-scarce", "real_shots_only": "real shots only"}
CURVE = {
    "real_shots": "real shots only",
    "genq_data_scarce": "GenQ data-scarce (style token)",
    "genq_data_free": "GenQ data-free (label prompts)",
}
CLAIMS = (
    ("style token > label prompts", "genq_data_scarce", "genq", 0.0),
    ("style token > the real shots alone", "genq_data_scarce", "real_shots_only", 0.0),
)
HEADLINE = "style token > the real shots alone"


def ptq_rows(m3: dict | None) -> list[dict]:
    """Notebook 03's W2A4 PTQ rows of every teacher, as one list."""
    return [r for rows in ((m3 or {}).get("ptq_w2a4_rows") or {}).values() for r in rows]


def curve_claims(m6: dict | None) -> list[Claim]:
    """Notebook 06's curve: each style-token point against the same k real shots alone and against data-free
    GenQ, with the main ablation teacher's seed spread."""
    part = (m6 or {}).get("data_scarce") or {}
    rows = part.get("rows") or []
    shots = {r.get("k"): r["top1"] for r in rows if r["source"] == "real_shots"}
    free = next((r["top1"] for r in rows if r["source"] == "genq_data_free"), None)
    spread = teacher_noise(m6, part.get("teacher", ""))
    found = []
    for r in sorted((r for r in rows if r["source"] == "genq_data_scarce"), key=lambda r: r["k"]):
        at = f"{where(part)}, k = {r['k']}"
        found.append(Claim(HEADLINE, at, diff(r["top1"], shots.get(r["k"])), spread))
        found.append(Claim("style token > label prompts", at, diff(r["top1"], free), spread))
    return found


def claims(runs: Metrics) -> list[Claim]:
    """The style token against label prompts and against the real shots alone: notebook 03, then 06's curve."""
    rows = ptq_rows(runs.get("03"))
    groups = group_top1(rows, lambda r: (r["teacher"], f"W{r['w_bits']}A{r['a_bits']}", r["source"]))
    columns = list(dict.fromkeys((r["teacher"], f"W{r['w_bits']}A{r['a_bits']}") for r in rows))
    return cell_claims(groups, columns, CLAIMS) + curve_claims(runs.get("06"))


def sets_table(m3: dict) -> str:
    """BN distance and class fidelity of the label-prompt, style-token and real sets."""
    body = [
        [name, f"{m3[key]['bn_distance']:.2f}", f"{100 * m3[key]['class_fidelity']:.1f}%"]
        for key, name in SETS.items()
        if key in m3
    ]
    return markdown_table(["set", "BN distance", "class fidelity"], body)


def ptq_table(m3: dict) -> str:
    """W2A4 PTQ top-1 per teacher calibrated on each set (mean ± std over seeds where run)."""
    rows = ptq_rows(m3)
    groups = group_top1(rows, lambda r: (r["teacher"], r["source"]))
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    body = [[f"`{t}`", *(seeded(groups.get((t, s))) for s in PTQ)] for t in teachers]
    return markdown_table(["W2A4 PTQ top-1 (%)", *PTQ.values()], body)


def notebook03(m3: dict | None) -> str:
    """Notebook 03's part: the sets' quality and W2A4 PTQ on each."""
    if not m3 or not any(k in m3 for k in SETS):
        return not_measured("Fig. 4, notebook 03 (style token, sets, W2A4 PTQ)", "03")
    learn = f"style token learned in {m3['learn_seconds'] / 60:.1f} min" if "learn_seconds" in m3 else ""
    shots = f"{m3['k_shots']} real image(s) per class" if "k_shots" in m3 else ""
    scored = f"BN distance and class fidelity by `{m3['teacher']}`" if "teacher" in m3 else ""
    return join(setting(m3, shots, learn, scored), sets_table(m3), ptq_table(m3) if ptq_rows(m3) else "")


def curve_table(m6: dict | None) -> str:
    """Notebook 06's curve: rows = real images per class k, columns = source; cells top-1 and images used."""
    part = (m6 or {}).get("data_scarce") or {}
    rows = part.get("rows") or []
    if not rows:
        return not_measured("Fig. 4, notebook 06 (the k-shot curve)", "06")
    sources = [s for s in CURVE if any(r["source"] == s for r in rows)]
    cell = {(r.get("k") or 0, r["source"]): r for r in rows}
    body = [
        [
            str(k) if k else "0 (data-free)",
            *(
                f"{pct(cell[(k, s)]['top1'])} (n={cell[(k, s)]['n']:,})" if (k, s) in cell else MISSING
                for s in sources
            ),
        ]
        for k in sorted({k for k, _ in cell})
    ]
    return markdown_table([f"`{where(part)}` k real per class", *(CURVE[s] for s in sources)], body)


def render(runs: Metrics, replicate: Metrics) -> str:
    """Fig. 4 as markdown: notebook 03's sets and PTQ, notebook 06's k-shot curve, then the claims."""
    m3, m6 = runs.get("03"), runs.get("06")
    return section(
        join(notebook03(m3), curve_table(m6)),
        claims_table(claims(runs), claims(replicate)),
        PAPER,
        "03",
        "06",
    )
