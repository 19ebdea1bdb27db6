#!/usr/bin/env python3
"""Generate the Grafana dashboards of agentrun-lifecycle-exporter.

The dashboards are code in dashboards/mixin/ (one module per dashboard, shared
helpers beside them). Thresholds, burn rates, windows, the cluster label and the
exporter's service.name come from the Helm chart's values
(deploy/chart/values.yaml), the same values the alert rules are rendered from;
the rest is in dashboards/mixin/config.py. The rendered JSON is committed once,
where the chart packages it: deploy/chart/dashboards/.

    python3 dashboards/generate.py              # rewrite deploy/chart/dashboards/*.json
    python3 dashboards/generate.py --check      # exit 1, with a diff, if the committed JSON is stale
    python3 dashboards/generate.py --out DIR [--values my-values.yaml] [--traces-backend jaeger] [--multi-cluster]
                                                # a variant for another install

Needs Python >= 3.11 and PyYAML (Debian: python3-yaml).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

# Leave the tree clean: no __pycache__ next to the sources.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mixin import config, render  # noqa: E402

OUT = config.OUT


def stale(rendered: dict[str, str], out: Path, diff_lines: int = 40) -> list[str]:
    """Problems, one per file of `out` that is not what was rendered (with the
    start of a unified diff), missing, or not produced by the generator."""
    problems = []
    for name, text in rendered.items():
        path = out / name
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        old = path.read_text()
        if old != text:
            diff = list(difflib.unified_diff(old.splitlines(), text.splitlines(), f"a/{name} (committed)",
                                             f"b/{name} (generated)", lineterm="", n=1))
            more = f"\n    ... {len(diff) - diff_lines} more diff lines" if len(diff) > diff_lines else ""
            problems.append(f"{path}: differs from the generator output\n    "
                            + "\n    ".join(diff[:diff_lines]) + more)
    for path in sorted(out.glob("*.json")):
        if path.name not in rendered:
            problems.append(f"{path}: not produced by the generator (remove it)")
    return problems


def check() -> list[str]:
    """The committed dashboards against the default rendering."""
    return stale(render(config.load()), OUT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write a variant to this directory (default: deploy/chart/dashboards)")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 and show the difference if a committed file is stale")
    ap.add_argument("--values", type=Path, action="append", default=[], metavar="FILE",
                    help="chart values merged over deploy/chart/values.yaml, as with helm -f (repeatable; "
                         "needs --out)")
    ap.add_argument("--traces-backend", choices=("tempo", "jaeger"), help="traces data source type (needs --out)")
    ap.add_argument("--multi-cluster", action="store_true",
                    help="show the cluster variable, split by cluster (needs --out)")
    args = ap.parse_args(argv)
    variant = bool(args.values or args.traces_backend or args.multi_cluster)
    if variant and not args.out:
        ap.error("--values, --traces-backend and --multi-cluster render a variant: pass --out DIR "
                 "(deploy/chart/dashboards holds the default rendering)")
    if args.check and (variant or args.out):
        ap.error("--check compares the default rendering with deploy/chart/dashboards; no other options")

    cfg = config.load(*args.values)
    if args.traces_backend:
        cfg["traces_backend"] = args.traces_backend
    if args.multi_cluster:
        cfg["show_multi_cluster"] = True
    rendered = render(cfg)
    out = args.out or OUT

    if args.check:
        problems = stale(rendered, out)
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        if problems:
            print("run: python3 dashboards/generate.py", file=sys.stderr)
            return 1
        print(f"ok: {out.relative_to(config.ROOT)}: {len(rendered)} dashboards up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out / name).write_text(text)
    print(f"wrote {len(rendered)} dashboards to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
