"""Compare every metrics.json of two figures trees key by key: python scripts/compare_metrics.py BEFORE AFTER.

Prints each differing path with both values; paths whose last key names a timing or machine field are listed
apart (they change from run to run by nature). Exit status 1 when any non-timing value differs."""

import json
import re
import sys
from pathlib import Path

TIMING = re.compile(r"(second|time|per_s|wall|finished|elapsed|machine|threads|cpu|from_cache)", re.I)


def walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append((f"{path}/{k}", a.get(k, "<missing>"), b.get(k, "<missing>")))
            else:
                walk(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((f"{path}[len]", len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            walk(x, y, f"{path}[{i}]", out)
    elif a != b or type(a) is not type(b):
        out.append((path, a, b))


def main(before: Path, after: Path) -> int:
    names = sorted(
        {p.relative_to(before) for p in before.glob("*/metrics.json")}
        | {p.relative_to(after) for p in after.glob("*/metrics.json")}
    )
    real, timing, keys = [], [], 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            real.append(
                (str(name), "present" if a.exists() else "missing", "present" if b.exists() else "missing")
            )
            continue
        out = []
        walk(json.loads(a.read_text()), json.loads(b.read_text()), str(name), out)
        keys += len(json.dumps(json.loads(a.read_text())))
        for d in out:
            (
                timing if any(TIMING.search(part) for part in re.split(r"[/\[\]]", d[0]) if part) else real
            ).append(d)
    print(f"{len(names)} metrics.json files compared")
    fields = sorted({re.sub(r"\[\d+\]", "[]", p) for p, _, _ in timing})
    print(f"timing/machine differences: {len(timing)} values in {len(fields)} fields")
    for f in fields:
        print("  ", f)
    print(f"other differences: {len(real)}")
    for p, x, y in real[:50]:
        print(f"  {p}: {x!r} -> {y!r}")
    return 1 if real else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
