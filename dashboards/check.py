#!/usr/bin/env python3
"""Checks for the Grafana dashboards in dashboards/ (Python 3.11 standard library only).

Static (always):
  - every dashboard parses as JSON; uids are the pinned ones and unique;
    title prefix, tags, links, timezone, refresh and template variables;
  - every panel's and target's data source is ${datasource} or ${traces_datasource};
  - every Prometheus query names only metrics from docs/telemetry.md or
    recording rules from alerts/agentrun-lifecycle.rules.yaml, with documented
    labels only, filters on cluster and namespace, aggregates (so job/instance/
    otel_scope_* go away), and uses only [$__rate_interval] or [$__range] windows;
  - a panel that uses a recording rule also works from raw metrics;
  - exemplars are off; trace links decode to an Explore query;
  - the committed JSON is what generate.py renders.

Live (with --prometheus URL): every panel's Prometheus query, with the template
variables substituted, is run against the Prometheus HTTP API; the check fails
on every query that errors, returns nothing, or returns series that still carry
job/instance/otel_scope_* labels.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TELEMETRY = ROOT / "docs" / "telemetry.md"
RULES = ROOT / "alerts" / "agentrun-lifecycle.rules.yaml"
# The committed dashboards: one copy, where the Helm chart packages them.
DASHBOARDS = ROOT / "deploy" / "chart" / "dashboards"

# Pinned: a uid is an API (bookmarks, links, provisioning). Change it here on
# purpose only.
EXPECTED_UIDS = {
    "agentrun-job-lifecycle.json": "agentrun-job-lifecycle",
    "agentrun-ttl-margin.json": "agentrun-ttl-margin",
}
TITLE_PREFIX = "AgentRun / "
REQUIRED_TAGS = {"agentrun", "agentrun-lifecycle-exporter"}
CLUSTER_LABEL = "cluster"
PROM_UID = "${datasource}"
TRACES_UID = "${traces_datasource}"
ALLOWED_WINDOWS = {"$__rate_interval", "${__rate_interval}", "$__range", "${__range}"}
BUILTIN_VARS = {"__rate_interval", "__range", "__interval", "__range_s", "__interval_ms", "__from", "__to"}
DROP_LABELS = re.compile(r"^(job|instance|otel_scope_.*)$")

AGGREGATORS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
               "count_values", "limitk", "limit_ratio"}
MODIFIERS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"}
RANGE_FUNCS = {"rate", "increase", "irate", "delta", "idelta", "deriv", "changes", "resets", "predict_linear",
               "holt_winters", "double_exponential_smoothing", "avg_over_time", "min_over_time", "max_over_time",
               "sum_over_time", "count_over_time", "last_over_time", "quantile_over_time", "stddev_over_time",
               "stdvar_over_time", "present_over_time", "absent_over_time", "mad_over_time"}

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?![\w:]))
  | (?P<var>\$\{[^}]+\}|\$\w+)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])
""", re.X)


# --------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------


@dataclass
class Metric:
    name: str
    type: str
    labels: set[str]


def parse_telemetry(path: Path) -> dict[str, Metric]:
    """Metric tables of docs/telemetry.md: rows under a header whose first cell is 'Prometheus name'."""
    metrics: dict[str, Metric] = {}
    in_table = False
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if cells and cells[0].lower() == "prometheus name":
            in_table = True
            continue
        if not in_table or set(cells[0]) <= {"-", ":", " "}:
            continue
        m = re.fullmatch(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", cells[0])
        if not m or len(cells) < 3:
            continue
        labels = set(re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", cells[2]))
        metrics[m.group(1)] = Metric(m.group(1), cells[1].lower(), labels)
    return metrics


def allowed_series(metrics: dict[str, Metric]) -> dict[str, set[str]]:
    """Series name -> labels a selector may match on."""
    out = {}
    for m in metrics.values():
        base = m.labels | {CLUSTER_LABEL}
        if m.type.startswith("histogram"):
            out[m.name + "_bucket"] = base | {"le"}
            out[m.name + "_sum"] = base
            out[m.name + "_count"] = base
        else:
            out[m.name] = base
    return out


def domain_counters(metrics: dict[str, Metric]) -> dict[str, set[str]]:
    """Counters about AgentRuns (those with a namespace label), not the exporter's own."""
    return {m.name: m.labels for m in metrics.values() if m.type == "counter" and "namespace" in m.labels}


def parse_rules(path: Path) -> set[str]:
    if not path.exists():
        return set()
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"""^\s*(?:-\s*)?record:\s*["']?([a-zA-Z_:][a-zA-Z0-9_:]*)["']?\s*(?:#.*)?$""", line)
        if m:
            names.add(m.group(1))
    return names


# --------------------------------------------------------------------------
# PromQL scan (enough of the grammar for these checks)
# --------------------------------------------------------------------------


@dataclass
class Selector:
    metric: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)
    window: str | None = None
    in_aggregation: bool = False
    function: str | None = None
    # enclosing aggregations, innermost first: (operator, by-labels or None)
    aggregations: list[tuple[str, frozenset[str] | None]] = field(default_factory=list)


@dataclass
class Scan:
    selectors: list[Selector]
    variables: set[str]
    windows: list[tuple[str | None, str]]  # (function, window)
    errors: list[str]


def tokenize(expr: str) -> tuple[list[tuple[str, str]], list[str]]:
    toks, errs, pos = [], [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            errs.append(f"cannot tokenize at {expr[pos:pos + 20]!r}")
            break
        pos = m.end()
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            toks.append((kind, m.group()))
    return toks, errs


def scan(expr: str) -> Scan:
    toks, errors = tokenize(expr)
    sels: list[Selector] = []
    variables: set[str] = set()
    windows: list[tuple[str | None, str]] = []
    stack: list[str] = []  # what each open paren belongs to
    aggs: list[tuple[str, frozenset[str] | None] | None] = []  # parallel to stack
    pending: str | None = None  # function / aggregator waiting for its "("
    pending_agg: tuple[str, frozenset[str] | None] | None = None
    i = 0

    def nxt(j):
        return toks[j] if j < len(toks) else ("eof", "")

    while i < len(toks):
        kind, val = toks[i]
        if kind == "var":
            variables.add(re.sub(r"^\$\{?([A-Za-z0-9_]+).*$", r"\1", val))
        if kind == "ident":
            low = val.lower()
            if low in MODIFIERS:
                labels = []
                if nxt(i + 1)[1] == "(":
                    depth, i = 0, i + 1
                    while i < len(toks):
                        if toks[i][1] == "(":
                            depth += 1
                        elif toks[i][1] == ")":
                            depth -= 1
                            if depth == 0:
                                break
                        elif toks[i][0] == "ident":
                            labels.append(toks[i][1])
                        i += 1
                if low == "by" and pending == "agg" and pending_agg:
                    pending_agg = (pending_agg[0], frozenset(labels))
                elif low == "without" and pending == "agg" and pending_agg:
                    pending_agg = (pending_agg[0], None)
                i += 1
                continue
            if low in KEYWORDS:
                i += 1
                continue
            if low in AGGREGATORS and nxt(i + 1)[1].lower() in ("(", "by", "without"):
                pending = "agg"
                pending_agg = (low, frozenset() if nxt(i + 1)[1] == "(" else None)
                i += 1
                continue
            if nxt(i + 1)[1] == "(":
                pending = val
                i += 1
                continue
            # a metric selector
            sel = Selector(val)
            i += 1
            if nxt(i)[1] == "{":
                i += 1
                while i < len(toks) and toks[i][1] != "}":
                    if toks[i][0] == "ident" and nxt(i + 1)[0] == "op" and nxt(i + 2)[0] == "string":
                        sel.matchers.append((toks[i][1], toks[i + 1][1], toks[i + 2][1][1:-1]))
                        variables.update(re.sub(r"^\$\{?([A-Za-z0-9_]+).*$", r"\1", v)
                                         for v in re.findall(r"\$\{[^}]+\}|\$\w+", toks[i + 2][1]))
                        i += 3
                    elif toks[i][1] == ",":
                        i += 1
                    else:
                        errors.append(f"unexpected {toks[i][1]!r} in the matchers of {val}")
                        i += 1
                i += 1  # "}"
            if nxt(i)[0] == "range":
                sel.window = nxt(i)[1][1:-1].strip()
                i += 1
            sel.in_aggregation = "agg" in stack
            sel.aggregations = [a for a in reversed(aggs) if a is not None]
            sel.function = stack[-1] if stack else None
            if sel.window is not None:
                windows.append((sel.function, sel.window))
            sels.append(sel)
            continue
        if kind == "op" and val == "{":
            errors.append("selector without a metric name")
        elif kind == "op" and val == "(":
            stack.append(pending or "group")
            aggs.append(pending_agg if pending == "agg" else None)
            pending = None
            pending_agg = None
        elif kind == "op" and val == ")":
            if not stack:
                errors.append("unbalanced )")
            else:
                stack.pop()
                aggs.pop()
        elif kind == "range":
            windows.append((stack[-1] if stack else None, val[1:-1].strip()))
            errors.append(f"range {val} not directly after a selector (subquery?)")
        i += 1
    if stack:
        errors.append("unbalanced (")
    return Scan(sels, variables, windows, errors)


# --------------------------------------------------------------------------
# Dashboard walking
# --------------------------------------------------------------------------


def panels_of(dash: dict):
    for p in dash.get("panels", []):
        yield p
        for c in p.get("panels", []) or []:
            yield c


def is_prom_target(t: dict, panel: dict) -> bool:
    ds = t.get("datasource") or panel.get("datasource") or {}
    return "expr" in t or ds.get("type") == "prometheus" or ds.get("uid") == PROM_UID


def variable_values(dash: dict, overrides: dict[str, str]) -> dict[str, str]:
    vals = {}
    for v in dash.get("templating", {}).get("list", []):
        cur = v.get("current", {}).get("value")
        if isinstance(cur, list):
            cur = cur[0] if cur else None
        if cur == "$__all":
            cur = v.get("allValue") or ".*"
        if cur in (None, "") and v.get("type") in ("textbox", "constant", "custom"):
            cur = v.get("query", "").split(",")[0]
        vals[v["name"]] = "" if cur is None else str(cur)
    vals.update(overrides)
    return vals


def substitute(expr: str, values: dict[str, str]) -> str:
    def rep(m):
        name = m.group(1) or m.group(3)
        if name not in values:
            raise KeyError(name)
        return values[name]
    return re.sub(r"\$\{([A-Za-z0-9_]+)(?::([A-Za-z0-9_]+))?\}|\$([A-Za-z0-9_]+)", rep, expr)


# --------------------------------------------------------------------------
# Static checks
# --------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name: str, problems: list[str]):
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems[:50]:
                print(f"     - {p}")
            if len(problems) > 50:
                print(f"     ... {len(problems) - 50} more")
        else:
            self.passed += 1
            print(f"ok   {name}")


def check_shell(fname: str, d: dict) -> list[str]:
    pr = []
    if d.get("uid") != EXPECTED_UIDS.get(fname):
        pr.append(f"uid {d.get('uid')!r}, expected {EXPECTED_UIDS.get(fname)!r}")
    if not str(d.get("title", "")).startswith(TITLE_PREFIX):
        pr.append(f"title {d.get('title')!r} lacks prefix {TITLE_PREFIX!r}")
    if not REQUIRED_TAGS <= set(d.get("tags", [])):
        pr.append(f"tags {d.get('tags')} lack {sorted(REQUIRED_TAGS)}")
    if d.get("timezone") != "utc":
        pr.append(f"timezone {d.get('timezone')!r}, expected 'utc'")
    if d.get("refresh") != "30s":
        pr.append(f"refresh {d.get('refresh')!r}, expected '30s'")
    if not any(l.get("type") == "dashboards" and l.get("asDropdown") and set(l.get("tags", [])) & REQUIRED_TAGS
               for l in d.get("links", [])):
        pr.append("no links dropdown by tag")
    vs = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = vs.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        pr.append("variable datasource must be type datasource, query prometheus")
    tds = vs.get("traces_datasource", {})
    if tds.get("type") != "datasource" or tds.get("query") not in ("tempo", "jaeger"):
        pr.append("variable traces_datasource must be type datasource, query tempo or jaeger")
    for name, multi in (("cluster", None), ("namespace", True)):
        v = vs.get(name)
        if not v:
            pr.append(f"variable {name} missing")
            continue
        if not v.get("includeAll") or v.get("allValue") != ".*":
            pr.append(f"variable {name} needs includeAll and allValue '.*'")
        if "$__all" not in json.dumps(v.get("current", {})):
            pr.append(f"variable {name} should default to All")
        if multi and not v.get("multi"):
            pr.append(f"variable {name} should be multi-value")
        if v.get("datasource", {}).get("uid") != PROM_UID:
            pr.append(f"variable {name} should query ${{datasource}}")
    return pr


def check_panels(d: dict) -> list[str]:
    pr = []
    ids, boxes = set(), []
    for p in panels_of(d):
        title = p.get("title") or f"panel {p.get('id')}"
        if p.get("id") in ids:
            pr.append(f"{title}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(k in g for k in "xywh"):
            pr.append(f"{title}: gridPos incomplete")
        else:
            box = (g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"])
            for other_title, o in boxes:
                if box[0] < o[2] and o[0] < box[2] and box[1] < o[3] and o[1] < box[3]:
                    pr.append(f"{title}: overlaps {other_title}")
            boxes.append((title, box))
            if box[2] > 24:
                pr.append(f"{title}: wider than the grid")
        if p.get("type") == "row":
            continue
        uid = (p.get("datasource") or {}).get("uid")
        if uid not in (PROM_UID, TRACES_UID):
            pr.append(f"{title}: panel data source {uid!r} is neither {PROM_UID} nor {TRACES_UID}")
        if not p.get("targets"):
            pr.append(f"{title}: no targets")
        for t in p.get("targets", []):
            tuid = (t.get("datasource") or {}).get("uid")
            if tuid != uid:
                pr.append(f"{title} {t.get('refId')}: target data source {tuid!r} differs from the panel's {uid!r}")
            if is_prom_target(t, p) and t.get("exemplar") is not False:
                pr.append(f"{title} {t.get('refId')}: exemplar must be false")
            if uid == TRACES_UID and "${trace_service}" not in json.dumps(t):
                pr.append(f"{title} {t.get('refId')}: trace query does not filter on ${{trace_service}}")
        if not p.get("description"):
            pr.append(f"{title}: no description")
    return pr


def check_queries(d: dict, series: dict[str, set[str]], dedupe: dict[str, set[str]],
                  rules: set[str]) -> list[str]:
    """`dedupe`: domain counters -> their documented labels. Every exporter
    replica counts the same events, so a counter's rate/increase must first be
    combined with `max by (<all its labels>)` before it is summed, except in
    a ratio (an expression with `/`), where they cancel out."""
    pr = []
    var_names = {v.get("name") for v in d.get("templating", {}).get("list", [])} | BUILTIN_VARS
    for p in panels_of(d):
        if p.get("type") == "row":
            continue
        title = p.get("title")
        raw_only_target = False
        rule_targets = []
        for t in p.get("targets", []):
            if not is_prom_target(t, p):
                continue
            where = f"{title} {t.get('refId')}"
            expr = t.get("expr", "")
            sc = scan(expr)
            pr.extend(f"{where}: {e}" for e in sc.errors)
            # In a ratio the replicas cancel out, and plain sums also stay right
            # across an exporter restart.
            is_ratio = "/" in re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
            for v in sorted(sc.variables - var_names):
                pr.append(f"{where}: unknown variable ${v}")
            used_rules, used_raw = set(), set()
            for s in sc.selectors:
                if s.metric in rules:
                    used_rules.add(s.metric)
                    allowed = None
                    has_ns = s.metric.startswith("namespace:")
                elif s.metric in series:
                    used_raw.add(s.metric)
                    allowed = series[s.metric]
                    has_ns = "namespace" in allowed
                else:
                    pr.append(f"{where}: {s.metric} is neither in docs/telemetry.md nor a recording rule in "
                              f"{RULES.relative_to(ROOT)}")
                    continue
                names = {m[0] for m in s.matchers}
                if allowed is not None:
                    for n in sorted(names - allowed):
                        pr.append(f"{where}: {s.metric} has no label {n!r}")
                if (CLUSTER_LABEL, "=~", "$cluster") not in s.matchers:
                    pr.append(f'{where}: {s.metric} lacks {CLUSTER_LABEL}=~"$cluster"')
                if has_ns and ("namespace", "=~", "$namespace") not in s.matchers:
                    pr.append(f'{where}: {s.metric} lacks namespace=~"$namespace"')
                if not s.in_aggregation:
                    pr.append(f"{where}: {s.metric} is not inside an aggregation (job/instance/otel_scope_* "
                              f"labels would leak)")
                elif s.metric in dedupe and s.window is not None and not is_ratio:
                    op, by = s.aggregations[0] if s.aggregations else ("", None)
                    if op != "max" or by is None or not dedupe[s.metric] <= by:
                        pr.append(f"{where}: {s.metric}: combine exporter replicas first with max by "
                                  f"({', '.join(sorted(dedupe[s.metric]))}) around the rate/increase")
            for fn, w in sc.windows:
                if w not in ALLOWED_WINDOWS:
                    pr.append(f"{where}: window [{w}] in {fn or 'selector'}; use [$__rate_interval] "
                              f"(or [$__range] for a whole-range total)")
                if fn not in RANGE_FUNCS:
                    pr.append(f"{where}: range vector outside a range function ({fn})")
            if used_rules and not used_raw:
                rule_targets.append(where)
            if used_raw and not used_rules:
                raw_only_target = True
        if rule_targets and not raw_only_target:
            pr.append(f"{title}: uses recording rules only ({', '.join(rule_targets)}); add a raw fallback")
    return pr


def check_links(d: dict) -> list[str]:
    pr = []
    for p in panels_of(d):
        links = list(p.get("links", [])) + list(p.get("fieldConfig", {}).get("defaults", {}).get("links", []))
        for l in links:
            url = l.get("url", "")
            if "/explore" not in url:
                continue
            plain = re.sub(r"\$\{[^}]+\}", "X", url)
            qs = urllib.parse.parse_qs(urllib.parse.urlsplit(plain).query)
            try:
                panes = json.loads(qs["panes"][0])
                pane = next(iter(panes.values()))
                q = pane["queries"][0]
            except (KeyError, ValueError, StopIteration, IndexError) as e:
                pr.append(f"{p.get('title')}: link {l.get('title')!r} does not decode to an Explore pane ({e})")
                continue
            full = urllib.parse.unquote(url)
            if "${traces_datasource}" not in full or "${trace_service}" not in full:
                pr.append(f"{p.get('title')}: link {l.get('title')!r} must use ${{traces_datasource}} and "
                          f"${{trace_service}}")
            if q.get("queryType") == "traceql" and q.get("query", "").count("{") < 1:
                pr.append(f"{p.get('title')}: link {l.get('title')!r} has no TraceQL spanset")
    return pr


def check_generated() -> list[str]:
    spec = importlib.util.spec_from_file_location("agentrun_dashboards_generate", HERE / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    pr = []
    for name, text in gen.render(gen.CONFIG).items():
        path = DASHBOARDS / name
        if not path.exists():
            pr.append(f"{name} missing (run python3 dashboards/generate.py)")
        elif path.read_text() != text:
            pr.append(f"{name} differs from the generator output (run python3 dashboards/generate.py)")
    return pr


def self_test(series: dict[str, set[str]], dedupe: dict[str, set[str]]) -> list[str]:
    """The query checks must catch what they are for: each broken query below
    must be flagged with the given fragment, and the good ones not at all."""
    f = 'cluster=~"$cluster", namespace=~"$namespace"'
    good = [
        f'sum by (namespace) (max by (cluster, namespace, runtime, outcome) (rate(agentrun_runs_total{{{f}}}[$__rate_interval])))',
        f'sum(max by (namespace, runtime, reason) (increase(agentrun_job_missing_total{{{f}}}[$__range])))',
        f'sum(increase(agentrun_job_missing_total{{{f}}}[$__range])) / sum(increase(agentrun_runs_total{{{f}}}[$__range]))',
        f'histogram_quantile(0.9, sum by (le, phase) (rate(agentrun_job_phase_duration_seconds_bucket{{{f}}}[$__rate_interval])))',
        f'sum(rate(agentrun_job_ttl_margin_seconds_count{{{f}}}[$__range])) or vector(0)',
        f'max by (namespace) (rule:x{{{f}}})\nor\nmax by (namespace) (agentrun_job_ttl_seconds{{{f}, stat="min"}})',
        'sum(rate(agentrun_exporter_spans_dropped_total{cluster=~"$cluster"}[$__rate_interval]))',
        f'min by (namespace) (agentrun_job_ttl_seconds{{{f}}})\n- on (namespace)\nsum(agentrun_jobs_without_ttl{{{f}}}) by (namespace)',
    ]
    bad = [
        (f'rate(agentrun_runs_total{{{f}}}[$__rate_interval])', "not inside an aggregation"),
        (f'sum(max by (namespace, runtime, outcome) (rate(agentrun_runs_total{{{f}}}[5m])))', "window [5m]"),
        (f'sum by (namespace) (rate(agentrun_runs_total{{{f}}}[$__rate_interval]))', "combine exporter replicas"),
        (f'sum(max by (namespace, runtime) (rate(agentrun_runs_total{{{f}}}[$__rate_interval])))',
         "combine exporter replicas"),
        (f'sum(max without (job) (rate(agentrun_runs_total{{{f}}}[$__rate_interval])))', "combine exporter replicas"),
        (f'sum(agentrun_runs_totals{{{f}}})', "neither in docs/telemetry.md"),
        ('sum(agentrun_runs_total{namespace=~"$namespace"})', 'lacks cluster=~"$cluster"'),
        ('sum(agentrun_runs_total{cluster=~"$cluster"})', 'lacks namespace=~"$namespace"'),
        (f'sum(agentrun_runs_total{{{f}, phase="run"}})', "has no label 'phase'"),
        (f'sum(agentrun_runs_total{{{f}}}) / $nosuchvar', "unknown variable $nosuchvar"),
        (f'max_over_time(sum(agentrun_runs_total{{{f}}})[1h:])', "subquery"),
        (f'sum({{{f}}})', "without a metric name"),
    ]
    rules = {"rule:x", "rule:only"}
    problems = []

    def run(exprs):
        d = {"templating": {"list": [{"name": "cluster"}, {"name": "namespace"}]},
             "panels": [{"type": "timeseries", "title": "t", "datasource": {"uid": PROM_UID},
                         "targets": [{"refId": "A", "expr": e, "datasource": {"uid": PROM_UID}} for e in exprs]}]}
        return check_queries(d, series, dedupe, rules)

    for e in good:
        got = run([e])
        if got:
            problems.append(f"good query flagged: {e!r}: {got}")
    for e, frag in bad:
        got = run([e])
        if not any(frag in g for g in got):
            problems.append(f"broken query not caught ({frag}): {e!r}: {got}")
    if not any("add a raw fallback" in g for g in run([f'max(rule:only{{{f}}})'])):
        problems.append("a panel with recording rules only was not caught")
    if run([f'max(rule:only{{{f}}})', f'max(agentrun_jobs_without_ttl{{{f}}})']):
        problems.append("a rule target with a raw second target was flagged")
    return problems


def load_dashboards(res: Results, folder: Path) -> dict[str, dict]:
    dashes = {}
    files = sorted(folder.glob("*.json"))
    problems = []
    for f in files:
        try:
            dashes[f.name] = json.loads(f.read_text())
        except ValueError as e:
            problems.append(f"{f.name}: {e}")
    for name in EXPECTED_UIDS:
        if name not in dashes and not any(p.startswith(name) for p in problems):
            problems.append(f"{name} missing")
    for name in dashes:
        if name not in EXPECTED_UIDS:
            problems.append(f"{name}: not a known dashboard (pin its uid in EXPECTED_UIDS)")
    res.check("dashboards parse as JSON", problems)
    uids = [d.get("uid") for d in dashes.values()]
    res.check("dashboard uids are unique", [f"uid {u!r} used twice" for u in set(uids) if uids.count(u) > 1])
    return dashes


def run_static(res: Results, folder: Path = DASHBOARDS) -> dict[str, dict]:
    metrics = parse_telemetry(TELEMETRY)
    res.check("docs/telemetry.md lists metrics", [] if metrics else ["no metric table found"])
    series = allowed_series(metrics)
    rules = parse_rules(RULES)
    res.check("query checks catch broken queries (self-test)", self_test(series, domain_counters(metrics)))
    print(f"     ({len(metrics)} metrics catalogued, {len(rules)} recording rules in "
          f"{RULES.relative_to(ROOT)}{'' if RULES.exists() else ' (file absent)'})")
    dashes = load_dashboards(res, folder)
    for name, d in dashes.items():
        res.check(f"{name}: uid, title, tags, links, time zone, refresh, variables", check_shell(name, d))
        res.check(f"{name}: panels have ids, layout, data sources, exemplars off", check_panels(d))
        res.check(f"{name}: queries use catalogued metrics and labels, filters, aggregation, windows",
                  check_queries(d, series, domain_counters(metrics), rules))
        res.check(f"{name}: trace links decode to Explore queries", check_links(d))
    if folder.resolve() == DASHBOARDS.resolve():
        res.check("rendered JSON is up to date with generate.py", check_generated())
    return dashes


# --------------------------------------------------------------------------
# Live check
# --------------------------------------------------------------------------


def http_json(url: str, timeout: float) -> dict:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read().decode())
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        return {"status": "error", "error": str(e)}


def loaded_rules(base: str, timeout: float) -> set[str] | None:
    r = http_json(f"{base}/api/v1/rules?type=record", timeout)
    if r.get("status") != "success":
        return None
    return {rule.get("name") for g in r.get("data", {}).get("groups", []) for rule in g.get("rules", [])}


def run_live(res: Results, dashes: dict[str, dict], args) -> None:
    base = args.prometheus.rstrip("/")
    rules_in_file = parse_rules(RULES)
    loaded = loaded_rules(base, args.timeout)
    overrides = {"namespace": ".*", "cluster": ".*", "__rate_interval": args.rate_interval,
                 "__range": args.range, "__interval": args.rate_interval}
    now = time.time()
    failures: list[str] = []
    print(f"\nlive check against {base} (rate interval {args.rate_interval}, range {args.range}"
          + (f", any sample in the last {args.lookback}" if args.lookback else ", instant queries") + ")")
    allow = [re.compile(a) for a in args.allow_empty]
    for fname, d in dashes.items():
        print(f"{d.get('title')} ({fname})")
        values = variable_values(d, overrides)
        for p in panels_of(d):
            if p.get("type") == "row":
                continue
            parts = []
            for t in p.get("targets", []):
                if not is_prom_target(t, p) or t.get("hide"):
                    continue
                ref = t.get("refId", "?")
                where = f"{d.get('title')} / {p.get('title')} {ref}"
                try:
                    q = substitute(t.get("expr", ""), values)
                except KeyError as e:
                    failures.append(f"{where}: unknown variable ${e.args[0]}")
                    parts.append(f"{ref}=ERR")
                    continue
                sels = {s.metric for s in scan(t.get("expr", "")).selectors}
                rule_only = sels and sels <= rules_in_file
                if rule_only and loaded is not None and not (sels <= loaded):
                    parts.append(f"{ref}=skip(rule not loaded)")
                    continue
                if args.lookback:
                    lb = parse_duration(args.lookback)
                    step = args.step or max(15, int(lb / 100))
                    url = (f"{base}/api/v1/query_range?" + urllib.parse.urlencode(
                        {"query": q, "start": f"{now - lb:.3f}", "end": f"{now:.3f}", "step": str(step)}))
                else:
                    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{now:.3f}"})
                r = http_json(url, args.timeout)
                if r.get("status") != "success":
                    failures.append(f"{where}: error {r.get('errorType', '')} {r.get('error')}\n        {q}")
                    parts.append(f"{ref}=ERR")
                    continue
                data = r.get("data", {})
                rtype, result = data.get("resultType"), data.get("result")
                if rtype == "scalar":
                    n, nan, leaked = 1, 0, set()
                else:
                    n = len(result or [])
                    leaked = {k for s in result or [] for k in s.get("metric", {}) if DROP_LABELS.match(k)}
                    nan = sum(1 for s in result or []
                              if all(v[1] in ("NaN", "+Inf", "-Inf") for v in (s.get("values") or [s.get("value")])))
                if leaked:
                    failures.append(f"{where}: series still carry {sorted(leaked)}\n        {q}")
                if n == 0:
                    if any(a.search(p.get("title", "")) for a in allow):
                        parts.append(f"{ref}=0(allowed)")
                        continue
                    failures.append(f"{where}: empty result\n        {q}")
                    parts.append(f"{ref}=0!")
                else:
                    parts.append(f"{ref}={n}" + (f"({nan} NaN)" if nan else ""))
            if parts:
                print(f"  {p.get('title')} -> {' '.join(parts)} series")
    res.check("live: every Prometheus query returns aggregated data", failures)


def parse_duration(s: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", s.strip())
    if not m:
        raise SystemExit(f"bad duration {s!r} (e.g. 30s, 5m, 1h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", metavar="URL", help="run every panel query against this Prometheus")
    ap.add_argument("--rate-interval", default="1m",
                    help="value for $__rate_interval (at least 4x the scrape interval; default 1m)")
    ap.add_argument("--range", default="1h", help="value for $__range (default 1h)")
    ap.add_argument("--step", metavar="SECONDS", type=int, default=0,
                    help="resolution of the --lookback range queries (default: lookback/100, at least 15 s); "
                         "short-lived series (a Job awaiting collection) need a fine step")
    ap.add_argument("--lookback", metavar="DURATION",
                    help="use range queries over the last DURATION and pass a query if it returned any sample "
                         "(for gauges that are absent once the scenario is over)")
    ap.add_argument("--allow-empty", metavar="REGEX", action="append", default=[],
                    help="panel titles whose queries may return nothing (repeatable)")
    ap.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")
    ap.add_argument("--dashboards", type=Path, default=DASHBOARDS, metavar="DIR",
                    help="check the dashboards in DIR, e.g. a variant from generate.py --out (default: "
                         "deploy/chart/dashboards, the committed copy; "
                         "the up-to-date check runs only for it)")
    args = ap.parse_args(argv)
    if args.lookback:
        parse_duration(args.lookback)

    res = Results()
    dashes = run_static(res, args.dashboards)
    if args.prometheus:
        run_live(res, dashes, args)
    print(f"dashboards: {res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
