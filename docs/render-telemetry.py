#!/usr/bin/env python3
"""Renders the tables of docs/telemetry.md from the catalogue, docs/telemetry.toml.

Each table sits between `<!-- catalogue:NAME -->` and `<!-- /catalogue -->`; everything else in the file is
prose and stays as written.

  docs/render-telemetry.py           rewrite docs/telemetry.md
  docs/render-telemetry.py --check   write nothing; exit 1 (with a diff) if it is stale
"""

import difflib
import re
import sys
import tomllib
from pathlib import Path

DOCS = Path(__file__).resolve().parent
CATALOGUE = DOCS / "telemetry.toml"
TARGET = DOCS / "telemetry.md"


def code(s):
    return f"`{s}`"


def metrics(cat, group):
    rows = ["| Prometheus name | type | labels | OTLP instrument (unit) | meaning |", "|---|---|---|---|---|"]
    for m in cat["metric"]:
        if m["group"] != group:
            continue
        labels = ", ".join(code(label) for label in m["labels"]) or "—"
        unit = f" ({code(m['unit'])})" if m["unit"] else ""
        rows.append(f"| {code(m['prometheus'])} | {m['type']} | {labels} | {code(m['otel'])}{unit} | {m['meaning']} |")
    return rows


def spans(cat):
    rows = ["| name | parent | start | end | emitted when |", "|---|---|---|---|---|"]
    rows += [f"| {code(s['name'])} | {s['parent']} | {s['start']} | {s['end']} | {s['emitted']} |" for s in cat["span"]]
    return rows


def events(cat):
    rows = ["| event | on span | time |", "|---|---|---|"]
    rows += [f"| {code(e['name'])} | {e['on']} | {e['time']} |" for e in cat["event"]]
    return rows


def attributes(cat):
    rows = ["| attribute | type | on | value |", "|---|---|---|---|"]
    for a in cat["attribute"]:
        rows.append(f"| {' / '.join(code(n) for n in a['names'])} | {a['type']} | {a['on']} | {a['value']} |")
    return rows


def render(text, cat):
    tables = {
        "spans": spans(cat),
        "events": events(cat),
        "attributes": attributes(cat),
        "metrics-domain": metrics(cat, "domain"),
        "metrics-self": metrics(cat, "self"),
    }

    def table(mo):
        name = mo.group(1)
        if name not in tables:
            sys.exit(f"{TARGET}: unknown table {name!r}")
        return f"<!-- catalogue:{name} -->\n" + "\n".join(tables[name]) + "\n<!-- /catalogue -->"

    return re.sub(r"<!-- catalogue:([\w-]+) -->\n.*?<!-- /catalogue -->", table, text, flags=re.S)


def main():
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] not in ([], ["--check"]):
        sys.exit(__doc__)
    cat = tomllib.loads(CATALOGUE.read_text())
    old = TARGET.read_text()
    new = render(old, cat)
    if not check:
        if new != old:
            TARGET.write_text(new)
            print(f"rendered {TARGET.name}")
        return 0
    if new != old:
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), str(TARGET), "rendered", lineterm="", n=1)
        print("\n".join(list(diff)[:40]), file=sys.stderr)
        print(f"FAIL: {TARGET} is stale; run ./generate", file=sys.stderr)
        return 1
    print(f"ok: {TARGET.name} matches {CATALOGUE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
