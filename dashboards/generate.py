#!/usr/bin/env python3
"""Generate the Grafana dashboards of agentrun-lifecycle-exporter.

Python 3.11 standard library only. The rendered JSON is committed once, where
the Helm chart packages it (deploy/chart/dashboards/); `check.py` fails when it
is not what this script produces.

    python3 dashboards/generate.py              # rewrite deploy/chart/dashboards/*.json
    python3 dashboards/generate.py --check      # exit 1 if the committed JSON is stale
    python3 dashboards/generate.py --out DIR --traces-backend jaeger --multi-cluster
                                                # a variant for another install

Every selector, threshold and name that an install may want to change is in
CONFIG below (the `_config` of a monitoring mixin).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The one committed copy: Helm reads only files inside the chart (.Files.Glob in
# deploy/chart/templates/dashboards.yaml).
OUT = ROOT / "deploy" / "chart" / "dashboards"

CONFIG = {
    # Dashboard identity. The uids are an API: links and bookmarks use them.
    "uids": {
        "lifecycle": "agentrun-job-lifecycle",
        "ttl": "agentrun-ttl-margin",
    },
    "files": {
        "lifecycle": "agentrun-job-lifecycle.json",
        "ttl": "agentrun-ttl-margin.json",
    },
    "title_prefix": "AgentRun / ",
    "tags": ["agentrun", "agentrun-lifecycle-exporter"],
    "timezone": "utc",
    "refresh": "30s",
    "time_from": "now-6h",
    # The label that tells clusters apart (an external label, or one added by
    # the remote-write / OTLP pipeline). Series without it still match.
    "cluster_label": "cluster",
    # Show the cluster variable and split series by cluster.
    "show_multi_cluster": False,
    # Metric whose label values list the clusters and namespaces.
    "cluster_variable_metric": "agentrun_exporter_build_info",
    "namespace_variable_metric": "agentrun_runs_total",
    # Traces: "tempo" (TraceQL) or "jaeger" (service/operation/tags search).
    "traces_backend": "tempo",
    # OTEL_SERVICE_NAME of the exporter (a hidden textbox variable, so a URL
    # parameter var-trace_service=... overrides it).
    "service_name": "agentrun-lifecycle-exporter",
    # Missing-Job SLO: share of finished runs that did NOT end JobMissing /
    # WorkflowJobMissing. Offered as a dashboard variable; this is the default.
    "slo_objectives_percent": ["99", "99.5", "99.9", "99.95", "99.99"],
    "slo_objective_default": "99.9",
    # Thresholds, as in the alerts (deploy/chart/values.yaml `alerts.thresholds`):
    # remaining TTL margin warning / critical, oldest uncollected Job.
    "ttl_margin_warning_seconds": 300,
    "ttl_margin_critical_seconds": 60,
    "awaiting_collection_max_age_seconds": 600,
    # Recording rules from alerts/agentrun-lifecycle.rules.yaml. Every panel
    # that uses one also works from raw metrics (an `or` fallback, or a
    # second target).
    "rules": {
        "ttl_recommended_min": "namespace:agentrun_job_ttl_recommended_min_seconds:histogram_quantile",
        "missing_ratio": "namespace:agentrun_job_missing:ratio_rate{window}",
        # Recorded windows shown on the error-ratio panel, and the burn-rate
        # alert pairs (long window, factor) shown on the burn-rate panel.
        "missing_ratio_windows": ["1h", "6h", "1d", "3d"],
        "burn_rates": [["1h", 14.4], ["6h", 6], ["1d", 3], ["3d", 1]],
    },
    # The recommended minimum Job TTL (alerts.recommendedTtl): max(quantile of
    # the collection delay * factor, min). The rule uses a 1d window; the raw
    # fallback uses the dashboard's time range.
    "ttl_recommended": {"quantile": 0.99, "factor": 3, "min_seconds": 30},
}

PROM_DS = {"type": "prometheus", "uid": "${datasource}"}

# Labels of the domain counters (docs/telemetry.md); check.py verifies that the
# de-duplicating `max by` keeps all of them.
COUNTER_LABELS = {
    "agentrun_runs_total": ("namespace", "runtime", "outcome"),
    "agentrun_job_missing_total": ("namespace", "runtime", "reason"),
    "agentrun_job_deleted_before_collection_total": ("namespace", "runtime"),
    "agentrun_job_deleted_with_run_total": ("namespace", "runtime", "reason"),
    "agentrun_job_ttl_margin_exceeded_total": ("namespace", "runtime", "ttl_applied"),
}
HISTOGRAM_LABELS = {
    "agentrun_job_collection_delay_seconds": ("namespace", "runtime", "outcome"),
    "agentrun_job_ttl_margin_seconds": ("namespace", "runtime", "ttl_applied"),
    "agentrun_job_ttl_deletion_lag_seconds": ("namespace",),
    "agentrun_job_phase_duration_seconds": ("namespace", "runtime", "phase"),
}


# --------------------------------------------------------------------------
# PromQL helpers
# --------------------------------------------------------------------------


class Q:
    """PromQL building blocks bound to one CONFIG."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.cl = cfg["cluster_label"]
        self.multi = cfg["show_multi_cluster"]

    def sel(self, metric: str, *matchers: str, ns: bool = True) -> str:
        """A selector filtered on the cluster and namespace variables.

        `cluster=~".*"` (the All value) also matches series that have no
        cluster label at all, so single-cluster installs keep working."""
        m = [f'{self.cl}=~"$cluster"']
        if ns:
            m.append('namespace=~"$namespace"')
        m.extend(matchers)
        return f"{metric}{{{', '.join(m)}}}"

    def by(self, *labels: str) -> str:
        ls = ([self.cl] if self.multi else []) + list(labels)
        return f"by ({', '.join(ls)})" if ls else ""

    def agg(self, op: str, labels, inner: str) -> str:
        b = self.by(*labels)
        return f"{op} {b} ({inner})" if b else f"{op}({inner})"

    def legend(self, text: str) -> str:
        return (f"{{{{{self.cl}}}}} " + text) if self.multi else text

    def rate(self, sel: str, window: str = "$__rate_interval") -> str:
        return f"rate({sel}[{window}])"

    def increase(self, sel: str, window: str = "$__rate_interval") -> str:
        return f"increase({sel}[{window}])"

    def counter(self, metric: str, labels=(), *matchers: str, fn: str = "increase",
                window: str = "$__rate_interval", ns: bool = True, dedupe: bool = True) -> str:
        """Sum of a domain counter's rate/increase by `labels`, de-duplicated
        first: with one exporter per controller replica every exporter counts
        the same events, so series that differ only in job/instance/otel_scope_*
        are combined with max over the counter's full label set, then summed.

        dedupe=False is for ratios, where the replicas cancel out: plain sums
        are then also right across an exporter restart (old and new pod's
        series each cover part of the window), which max is not."""
        rated = f"{fn}({self.sel(metric, *matchers, ns=ns)}[{window}])"
        if not dedupe:
            return self.agg("sum", labels, rated)
        full = ", ".join([self.cl, *COUNTER_LABELS[metric]])
        return self.agg("sum", labels, f"max by ({full}) ({rated})")

    def buckets(self, metric: str, *matchers: str) -> str:
        """Observations per bucket and interval, for a heatmap: de-duplicated
        across exporters like counters (quantiles need no de-duplication, as
        every exporter sees the same distribution)."""
        full = ", ".join([self.cl, *HISTOGRAM_LABELS[metric], "le"])
        inner = f"max by ({full}) (increase({self.sel(metric + '_bucket', *matchers)}[$__rate_interval]))"
        return self.agg("sum", ("le",), inner)

    def hq(self, q: float, metric: str, labels=(), *matchers: str, window: str = "$__rate_interval") -> str:
        inner = self.agg("sum", ("le", *labels), self.rate(self.sel(f"{metric}_bucket", *matchers), window))
        return f"histogram_quantile({q}, {inner})"

    # -- recording rules with raw fallbacks --------------------------------

    def ttl_recommended(self, labels=("namespace",), window: str = "$__range") -> str:
        """Recommended minimum Job TTL: the recording rule where it exists,
        else the same formula from the raw histogram over the dashboard range."""
        rt = self.cfg["ttl_recommended"]
        rule = self.agg("max", labels, self.sel(self.cfg["rules"]["ttl_recommended_min"]))
        raw = (
            "clamp_min(\n  "
            + self.hq(rt["quantile"], "agentrun_job_collection_delay_seconds", labels, window=window)
            + f"\n  * {rt['factor']},\n  {rt['min_seconds']}\n) >= 0"
        )
        return f"{rule}\nor\n{raw}"

    def missing_ratio_raw(self, labels=("namespace",), window: str = "$__rate_interval") -> str:
        """Missing-Job error ratio from raw counters. A namespace with runs but
        no missing-Job series yet counts as 0, not as "no data"."""
        runs = self.counter("agentrun_runs_total", labels, window=window, dedupe=False)
        missing = self.counter("agentrun_job_missing_total", labels, window=window, dedupe=False)
        return f"(\n  {missing}\n  or\n  0 * {runs}\n)\n/\n{runs}"


# --------------------------------------------------------------------------
# Trace links
# --------------------------------------------------------------------------


class Traces:
    """Queries against the traces data source (Tempo TraceQL or Jaeger)."""

    def __init__(self, cfg: dict):
        self.backend = cfg["traces_backend"]
        if self.backend not in ("tempo", "jaeger"):
            raise SystemExit(f"traces_backend must be tempo or jaeger, not {self.backend!r}")
        self.ds = {"type": self.backend, "uid": "${traces_datasource}"}

    @staticmethod
    def traceql(span: str | None, ns: str, conds: list[str]) -> str:
        parts = ['resource.service.name = "${trace_service}"']
        if ns:
            parts.append(ns)
        if span:
            parts.append(f'name = "{span}"')
        parts.extend(conds)
        return "{ " + " && ".join(parts) + " }"

    def query(self, span: str | None, ns: str, conds: list[str], jaeger_tags: dict, ref="A", limit=20) -> dict:
        """`ns` is a TraceQL namespace condition; Jaeger gets `jaeger_tags`
        (equality only) instead of `ns` and `conds`."""
        if self.backend == "tempo":
            return {
                "datasource": self.ds,
                "refId": ref,
                "queryType": "traceql",
                "query": self.traceql(span, ns, conds),
                "limit": limit,
                "tableType": "traces",
            }
        q = {
            "datasource": self.ds,
            "refId": ref,
            "queryType": "search",
            "service": "${trace_service}",
            "limit": limit,
        }
        if span:
            q["operation"] = span
        if jaeger_tags:
            q["tags"] = " ".join(f"{k}={v}" for k, v in jaeger_tags.items())
        return q

    def explore_url(self, query: dict) -> str:
        """A Grafana Explore URL (panes format, Grafana >= 10.2) that runs
        `query` on the traces data source over the dashboard's time range.

        The literal parts are percent-encoded here; `${...}` references are
        left for Grafana, which URI-encodes their values in data links."""
        pane = {
            "agentrun": {
                "datasource": "${traces_datasource}",
                "queries": [query],
                "range": {"from": "${__from}", "to": "${__to}"},
            }
        }
        raw = json.dumps(pane, separators=(",", ":"))
        out = []
        for part in re.split(r"(\$\{[^}]+\})", raw):
            out.append(part if part.startswith("${") else urllib.parse.quote(part, safe=""))
        return "/explore?schemaVersion=1&orgId=1&panes=" + "".join(out)

    def link(self, title: str, span, ns: str, conds, jaeger_tags) -> dict:
        return {
            "title": title,
            "url": self.explore_url(self.query(span, ns, conds, jaeger_tags)),
            "targetBlank": True,
        }

    # namespace conditions
    FIELD_NS = 'span.k8s.namespace.name = "${__field.labels.namespace}"'
    VAR_NS = 'span.k8s.namespace.name =~ "${namespace:regex}"'


# --------------------------------------------------------------------------
# Panels
# --------------------------------------------------------------------------


def prom_target(expr: str, legend: str, ref: str, instant: bool = False, fmt: str = "time_series") -> dict:
    t = {
        "datasource": PROM_DS,
        "editorMode": "code",
        "expr": expr,
        "exemplar": False,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
    }
    return t


def thresholds(*steps) -> dict:
    """steps: (color, value) pairs; the first value is None (base)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


GREEN_ONLY = thresholds(("green", None))


def dashed(ref_id):
    """A field override drawing the series of target `ref_id` dashed (the threshold beside the measure)."""
    return {"matcher": {"id": "byFrameRefID", "options": ref_id},
            "properties": [{"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}]}


def timeseries(title, desc, targets, unit="short", stack=False, bars=False, log=False, min_=None,
               th=None, th_style="off", links=None, legend_calcs=("lastNotNull", "max"), overrides=None,
               decimals=None) -> dict:
    custom = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": 0,
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else 10,
        "gradientMode": "none",
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False,
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "log", "log": 10} if log else {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": th_style},
    }
    defaults = {"color": {"mode": "palette-classic"}, "custom": custom, "unit": unit,
                "thresholds": th or GREEN_ONLY, "links": links or []}
    if min_ is not None:
        defaults["min"] = min_
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": PROM_DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"calcs": list(legend_calcs), "displayMode": "table", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, desc, targets, unit="short", th=None, no_value="", color_mode="value", text_mode="auto",
         decimals=None, links=None, graph=False) -> dict:
    defaults = {"color": {"mode": "thresholds"}, "unit": unit, "thresholds": th or GREEN_ONLY,
                "mappings": [], "links": links or []}
    if no_value:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": PROM_DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": color_mode,
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": text_mode,
            "wideLayout": True,
        },
    }


def heatmap(title, desc, target, unit="s") -> dict:
    return {
        "type": "heatmap",
        "title": title,
        "description": desc,
        "datasource": PROM_DS,
        "targets": [target],
        "fieldConfig": {"defaults": {"custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False},
                                                "scaleDistribution": {"type": "linear"}}},
                        "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                      "scale": "exponential", "scheme": "Oranges", "steps": 64},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "le"},
            "showValue": "never",
            "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
        },
    }


def table(title, desc, targets, overrides, ds=PROM_DS, transformations=None, sort_by=None) -> dict:
    p = {
        "type": "table",
        "title": title,
        "description": desc,
        "datasource": ds,
        "targets": targets,
        "fieldConfig": {"defaults": {"custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True,
                                                "inspect": False},
                                     "thresholds": GREEN_ONLY, "mappings": []},
                        "overrides": overrides},
        "options": {"cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""},
                    "showHeader": True},
        "transformations": transformations or [],
    }
    if sort_by:
        p["options"]["sortBy"] = [{"displayName": sort_by, "desc": False}]
    return p


def override_unit(name: str, unit: str, display: str | None = None) -> dict:
    props = [{"id": "unit", "value": unit}]
    if display:
        props.append({"id": "displayName", "value": display})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


class Layout:
    """Flows panels left to right on Grafana's 24-column grid."""

    def __init__(self):
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.line_h = 0
        self.next_id = 1

    def _newline(self):
        self.y += self.line_h
        self.x = 0
        self.line_h = 0

    def row(self, title: str):
        if self.x:
            self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": self.next_id,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def add(self, panel: dict, w: int, h: int):
        if self.x + w > 24:
            self._newline()
        panel = {"id": self.next_id, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}, **panel}
        self.next_id += 1
        self.panels.append(panel)
        self.x += w
        self.line_h = max(self.line_h, h)


# --------------------------------------------------------------------------
# Dashboard shell
# --------------------------------------------------------------------------


def templating(cfg: dict, q: Q, slo: bool) -> dict:
    cl = cfg["cluster_label"]
    cluster_q = f"label_values({cfg['cluster_variable_metric']}, {cl})"
    ns_q = f'label_values({cfg["namespace_variable_metric"]}{{{cl}=~"$cluster"}}, namespace)'
    all_current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    vs = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "traces_datasource",
            "label": "Traces",
            "description": f"{cfg['traces_backend'].capitalize()} data source that receives the exporter's spans.",
            "type": "datasource",
            "query": cfg["traces_backend"],
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "cluster",
            "label": "Cluster",
            "type": "query",
            "datasource": PROM_DS,
            "definition": cluster_q,
            "query": {"query": cluster_q, "refId": "cluster"},
            "current": {"selected": True, "text": "All", "value": "$__all"},
            "hide": 0 if cfg["show_multi_cluster"] else 2,
            "includeAll": True,
            "allValue": ".*",
            "multi": False,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": PROM_DS,
            "definition": ns_q,
            "query": {"query": ns_q, "refId": "namespace"},
            "current": all_current,
            "hide": 0,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
        },
        {
            "name": "trace_service",
            "label": "Trace service",
            "description": "service.name of the exporter's spans (OTEL_SERVICE_NAME).",
            "type": "textbox",
            "query": cfg["service_name"],
            "current": {"selected": False, "text": cfg["service_name"], "value": cfg["service_name"]},
            "hide": 2,
            "options": [{"selected": True, "text": cfg["service_name"], "value": cfg["service_name"]}],
        },
    ]
    if slo:
        d = cfg["slo_objective_default"]
        vs.append({
            "name": "slo_objective",
            "label": "Missing-Job SLO (%)",
            "description": "Objective: this percentage of finished runs does not end JobMissing/WorkflowJobMissing.",
            "type": "custom",
            "query": ",".join(cfg["slo_objectives_percent"]),
            "current": {"selected": True, "text": d, "value": d},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [{"selected": v == d, "text": v, "value": v} for v in cfg["slo_objectives_percent"]],
        })
    return {"list": vs}


def dashboard(cfg: dict, key: str, title: str, desc: str, layout: Layout, slo: bool) -> dict:
    q = Q(cfg)
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": desc,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [{
            "asDropdown": True,
            "icon": "external link",
            "includeVars": True,
            "keepTime": True,
            "tags": [cfg["tags"][0]],
            "targetBlank": False,
            "title": "AgentRun dashboards",
            "tooltip": "",
            "type": "dashboards",
            "url": "",
        }],
        "panels": layout.panels,
        "refresh": cfg["refresh"],
        "schemaVersion": 39,
        "tags": list(cfg["tags"]),
        "templating": templating(cfg, q, slo),
        "time": {"from": cfg["time_from"], "to": "now"},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]},
        "timezone": cfg["timezone"],
        "title": cfg["title_prefix"] + title,
        "uid": cfg["uids"][key],
        "version": 1,
        "weekStart": "",
    }


# --------------------------------------------------------------------------
# "AgentRun / Job lifecycle"
# --------------------------------------------------------------------------


def lifecycle(cfg: dict) -> dict:
    q = Q(cfg)
    tr = Traces(cfg)
    L = Layout()
    sel = q.sel
    lg = q.legend

    def ns_link(title, span, conds, tags):
        return tr.link(title, span, Traces.FIELD_NS, conds,
                       {"k8s.namespace.name": "${__field.labels.namespace}", **tags})

    # ---- Runs -------------------------------------------------------------
    L.row("Runs")
    L.add(stat("Runs finished", "AgentRuns that reached a terminal phase in the time range.",
               [prom_target(q.counter("agentrun_runs_total", window="$__range"), "runs", "A",
                            instant=True)],
               decimals=0, no_value="0"), 4, 4)
    L.add(stat("Run success ratio", "Succeeded runs / finished runs in the time range.",
               [prom_target(
                   q.counter("agentrun_runs_total", (), 'outcome="succeeded"', window="$__range", dedupe=False)
                   + "\n/\n" + q.counter("agentrun_runs_total", window="$__range", dedupe=False),
                   "success", "A", instant=True)],
               unit="percentunit", decimals=1,
               th=thresholds(("red", None), ("orange", 0.9), ("green", 0.98))), 4, 4)
    L.add(stat("Runs ended JobMissing", "Runs that ended with reason JobMissing or WorkflowJobMissing in the "
               "time range (agentrun_job_missing_total).",
               [prom_target(q.counter("agentrun_job_missing_total", window="$__range"), "missing", "A",
                            instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("red", 1)),
               links=[tr.link("Traces of runs that ended JobMissing", "agentrun", Traces.VAR_NS,
                              ['span.agentrun.reason =~ "JobMissing|WorkflowJobMissing"'], {"error": "true"})]), 4, 4)
    L.add(stat("Jobs deleted before collection", "Jobs that disappeared before the AgentRun or step status "
               "consumed them, in the time range.",
               [prom_target(q.counter("agentrun_job_deleted_before_collection_total", window="$__range"),
                            "deleted", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("red", 1))), 4, 4)
    L.add(stat("Jobs awaiting collection", "Finished Jobs whose status was not consumed yet (now).",
               [prom_target(f"sum({q.agg('max', ('namespace',), sel('agentrun_job_awaiting_collection'))})",
                            "awaiting", "A", instant=True)],
               decimals=0, no_value="0"), 4, 4)
    L.add(stat("Oldest Job awaiting collection", "Age since it finished of the oldest Job whose status was "
               "not consumed yet (now); orange above the collection-stalled alert threshold.",
               [prom_target(f"max({q.agg('max', ('namespace',), sel('agentrun_job_awaiting_collection_max_age_seconds'))})",
                            "max age", "A", instant=True)],
               unit="s", no_value="0",
               th=thresholds(("green", None), ("orange", cfg["awaiting_collection_max_age_seconds"]))), 4, 4)

    L.add(timeseries("Runs finished by outcome", "Rate (runs/s) of AgentRuns reaching a terminal phase, by outcome.",
                     [prom_target(q.counter("agentrun_runs_total", ("outcome",), fn="rate"),
                                  lg("{{outcome}}"), "A")],
                     unit="short", stack=True, min_=0,
                     overrides=[
                         {"matcher": {"id": "byName", "options": "succeeded"},
                          "properties": [{"id": "color", "value": {"fixedColor": "green", "mode": "fixed"}}]},
                         {"matcher": {"id": "byName", "options": "failed"},
                          "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}]},
                         {"matcher": {"id": "byName", "options": "cancelled"},
                          "properties": [{"id": "color", "value": {"fixedColor": "yellow", "mode": "fixed"}}]},
                     ]),
          12, 8)
    L.add(timeseries("Runs finished by namespace and runtime",
                     "Rate (runs/s) of AgentRuns reaching a terminal phase, by namespace and runtime "
                     "(job or workflow). Click a series for its traces.",
                     [prom_target(q.counter("agentrun_runs_total", ("namespace", "runtime"), fn="rate"),
                                  lg("{{namespace}} {{runtime}}"), "A")],
                     unit="short", min_=0,
                     links=[ns_link("Traces of runs in ${__field.labels.namespace} (${__field.labels.runtime})",
                                    "agentrun", ['span.agentrun.runtime = "${__field.labels.runtime}"'],
                                    {"agentrun.runtime": "${__field.labels.runtime}"})]), 12, 8)
    L.add(timeseries("Failed and cancelled runs by namespace",
                     "Rate (runs/s) of runs that ended Failed or Cancelled. Click a series for the traces of "
                     "failed runs.",
                     [prom_target(q.counter("agentrun_runs_total", ("namespace", "outcome"), 'outcome!="succeeded"',
                                            fn="rate"),
                                  lg("{{namespace}} {{outcome}}"), "A")],
                     unit="short", min_=0,
                     links=[ns_link("Failed runs in ${__field.labels.namespace}", "agentrun",
                                    ["status = error"], {"error": "true"})]), 12, 8)
    L.add(table("Recent AgentRun traces",
                "The most recent AgentRun root spans in the selected namespaces (traces data source).",
                [tr.query("agentrun", Traces.VAR_NS, [], {}, limit=20)], [], ds=tr.ds), 12, 8)

    # ---- Job phases -------------------------------------------------------
    L.row("Job phases")
    ph = "agentrun_job_phase_duration_seconds"
    L.add(timeseries("Job phase duration quantiles",
                     "p50 / p90 / p99 of the time Jobs spend in each phase: submit (run or step start -> Job "
                     "created), pending (created -> started), run (started -> finished).",
                     [prom_target(q.hq(0.5, ph, ("phase",)), lg("p50 {{phase}}"), "A"),
                      prom_target(q.hq(0.9, ph, ("phase",)), lg("p90 {{phase}}"), "B"),
                      prom_target(q.hq(0.99, ph, ("phase",)), lg("p99 {{phase}}"), "C")],
                     unit="s", log=True), 12, 9)
    L.add(timeseries("Mean Job phase duration by namespace",
                     "Mean time in each phase, by namespace (histogram sum / count).",
                     [prom_target(
                         q.agg("sum", ("namespace", "phase"), q.rate(sel(f"{ph}_sum")))
                         + "\n/\n"
                         + q.agg("sum", ("namespace", "phase"), q.rate(sel(f"{ph}_count"))),
                         lg("{{namespace}} {{phase}}"), "A")],
                     unit="s", log=True,
                     links=[ns_link("Job runs in ${__field.labels.namespace}", "job.run", [], {})]), 12, 9)
    L.add(heatmap("Job run phase distribution", "Jobs per bucket of the run phase (started -> finished).",
                  prom_target(q.buckets(ph, 'phase="run"'),
                              "{{le}}", "A", fmt="heatmap")), 12, 8)
    L.add(heatmap("Job pending phase distribution",
                  "Jobs per bucket of the pending phase (created -> started): scheduling and image pulls.",
                  prom_target(q.buckets(ph, 'phase="pending"'),
                              "{{le}}", "A", fmt="heatmap")), 12, 8)

    # ---- Collection and missing Jobs ---------------------------------------
    L.row("Collection and missing Jobs")
    L.add(timeseries("Jobs awaiting collection", "Finished Jobs whose status the AgentRun or step has not "
                     "consumed yet, by namespace.",
                     [prom_target(q.agg("max", ("namespace",), sel("agentrun_job_awaiting_collection")),
                                  lg("{{namespace}}"), "A")],
                     unit="short", min_=0, decimals=0), 12, 8)
    L.add(timeseries("Oldest Job awaiting collection vs TTL",
                     "Age of the oldest uncollected finished Job, by namespace, against the smallest Job TTL "
                     "in force (dashed). An age reaching the TTL means the Job can be deleted before collection.",
                     [prom_target(q.agg("max", ("namespace",), sel("agentrun_job_awaiting_collection_max_age_seconds")),
                                  lg("age {{namespace}}"), "A"),
                      prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                                  lg("TTL {{namespace}}"), "B")],
                     unit="s", min_=0,
                     overrides=[dashed("B")]), 12, 8)
    L.add(timeseries("Runs ended JobMissing by reason",
                     "Runs that ended with reason JobMissing (job runtime) or WorkflowJobMissing (workflow), "
                     "per interval. Click a bar for the traces of those runs.",
                     [prom_target(q.counter("agentrun_job_missing_total", ("namespace", "reason")),
                                  lg("{{namespace}} {{reason}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[ns_link("Runs that ended ${__field.labels.reason} in ${__field.labels.namespace}",
                                    "agentrun", ['span.agentrun.reason = "${__field.labels.reason}"'],
                                    {"agentrun.reason": "${__field.labels.reason}"})]), 12, 8)
    L.add(timeseries("Jobs deleted before collection",
                     "Jobs that disappeared before their status was consumed, per interval, by namespace and "
                     "runtime. Click a bar for the job.ttl (or job.run, if the Job never finished) spans.",
                     [prom_target(q.counter("agentrun_job_deleted_before_collection_total", ("namespace", "runtime")),
                                  lg("{{namespace}} {{runtime}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[deleted_link(tr, Traces.FIELD_NS, field=True)]), 12, 8)
    L.add(timeseries("Jobs deleted with their run",
                     "Jobs the agents controller deleted because their AgentRun was deleted, per interval: reason "
                     "cancel (the run was still running) or retention (it had finished). Not incidents; a cancel "
                     "rate that jumps is worth a look.",
                     [prom_target(q.counter("agentrun_job_deleted_with_run_total", ("namespace", "reason")),
                                  lg("{{namespace}} {{reason}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0), 12, 8)

    # ---- Exporter health ----------------------------------------------------
    L.row("Exporter health")
    L.add(stat("Exporter version", "agentrun_exporter_build_info: the running versions.",
               [prom_target(q.agg("max", ("version",), q.sel("agentrun_exporter_build_info", ns=False)),
                            "{{version}}", "A", instant=True)],
               text_mode="name", color_mode="none", no_value="exporter not seen"), 4, 4)
    L.add(stat("Watch errors", "Failed list/watch calls in the time range (each is retried with backoff).",
               [prom_target(f"sum({q.increase(q.sel('agentrun_exporter_watch_errors_total', ns=False), '$__range')})",
                            "errors", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("orange", 1))), 4, 4)
    L.add(stat("Spans dropped", "Spans lost in the time range: export failed after retries, or the queue "
               "was full.",
               [prom_target(f"sum({q.increase(q.sel('agentrun_exporter_spans_dropped_total', ns=False), '$__range')})",
                            "dropped", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("red", 1))), 4, 4)
    L.add(stat("Spans exported", "Spans the exporter accepted in the time range.",
               [prom_target(f"sum({q.increase(q.sel('agentrun_exporter_spans_exported_total', ns=False), '$__range')})",
                            "exported", "A", instant=True)],
               decimals=0, no_value="0"), 4, 4)
    L.add(stat("Tracked objects", "Objects held in memory by one exporter, all resources (now; the largest "
               "exporter when several run).",
               [prom_target("sum(" + q.agg("max", ("resource",), q.sel("agentrun_exporter_tracked_objects", ns=False))
                            + ")", "objects", "A", instant=True)],
               decimals=0), 4, 4)
    L.add(stat("Malformed watch events", "Watch events that could not be decoded, in the time range.",
               [prom_target(
                   "sum(" + q.increase(q.sel("agentrun_exporter_watch_events_total", 'type="malformed"', ns=False), "$__range") + ")",
                   "malformed", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("orange", 1))), 4, 4)
    L.add(timeseries("Watch events by resource and type", "Watch events applied per second.",
                     [prom_target(q.agg("sum", ("resource", "type"),
                                        q.rate(q.sel("agentrun_exporter_watch_events_total", ns=False))),
                                  lg("{{resource}} {{type}}"), "A")],
                     unit="short", min_=0), 8, 8)
    L.add(timeseries("Watch errors by resource", "Failed list/watch calls per second.",
                     [prom_target(q.agg("sum", ("resource",),
                                        q.rate(q.sel("agentrun_exporter_watch_errors_total", ns=False))),
                                  lg("{{resource}}"), "A")],
                     unit="short", min_=0), 8, 8)
    L.add(timeseries("Tracked objects by resource", "AgentRuns, Jobs and Pods held in memory by one exporter "
                     "(the largest when several run).",
                     [prom_target(q.agg("max", ("resource",), q.sel("agentrun_exporter_tracked_objects", ns=False)),
                                  lg("{{resource}}"), "A")],
                     unit="short", min_=0, decimals=0), 8, 8)
    L.add(timeseries("Spans exported and dropped", "Spans per second accepted by the exporter and lost.",
                     [prom_target(q.agg("sum", (), q.rate(q.sel("agentrun_exporter_spans_exported_total", ns=False))),
                                  lg("exported"), "A"),
                      prom_target(q.agg("sum", (), q.rate(q.sel("agentrun_exporter_spans_dropped_total", ns=False))),
                                  lg("dropped"), "B")],
                     unit="short", min_=0,
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"},
                                 "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}}]}]),
          12, 8)
    L.add(timeseries("Exporter versions", "agentrun_exporter_build_info over time: shows upgrades and restarts.",
                     [prom_target(q.agg("max", ("version",), q.sel("agentrun_exporter_build_info", ns=False)),
                                  lg("{{version}}"), "A")],
                     unit="short", min_=0, decimals=0, legend_calcs=()), 12, 8)

    return dashboard(cfg, "lifecycle", "Job lifecycle",
                     "AgentRun runs and outcomes, Job phase durations, Jobs awaiting collection, missing Jobs and "
                     "deletions before collection, and the health of agentrun-lifecycle-exporter.",
                     L, slo=False)


def deleted_link(tr: Traces, ns: str, field: bool) -> dict:
    """Traces of Jobs deleted before collection: the job.ttl span flags it;
    a Job deleted before it finished has no job.ttl span, only a job.run span
    with outcome `deleted`."""
    conds = ['((name = "job.ttl" && span.agentrun.job.deleted_before_collection = true) || '
             '(name = "job.run" && span.agentrun.job.outcome = "deleted"))']
    tags = {"agentrun.job.deleted_before_collection": "true"}
    if field:
        conds.append('span.agentrun.runtime = "${__field.labels.runtime}"')
        tags = {"k8s.namespace.name": "${__field.labels.namespace}", **tags}
        title = "Jobs deleted before collection in ${__field.labels.namespace} (${__field.labels.runtime})"
    else:
        title = "Jobs deleted before collection"
    # Jaeger cannot OR two operations: it searches the job.ttl spans.
    link = tr.link(title, None if tr.backend == "tempo" else "job.ttl", ns, conds, tags)
    return link


# --------------------------------------------------------------------------
# "AgentRun / TTL margin"
# --------------------------------------------------------------------------


def ttl_margin(cfg: dict) -> dict:
    q = Q(cfg)
    tr = Traces(cfg)
    L = Layout()
    sel = q.sel
    lg = q.legend
    warn = cfg["ttl_margin_warning_seconds"]
    cd = "agentrun_job_collection_delay_seconds"
    mg = "agentrun_job_ttl_margin_seconds"
    crit = cfg["ttl_margin_critical_seconds"]
    margin_th = thresholds(("red", None), ("orange", crit), ("green", warn))
    slo_budget = "(1 - $slo_objective / 100)"
    rt = cfg["ttl_recommended"]

    def ns_link(title, span, conds, tags):
        return tr.link(title, span, Traces.FIELD_NS, conds,
                       {"k8s.namespace.name": "${__field.labels.namespace}", **tags})

    low_margin_conds = [f"span.agentrun.job.ttl_margin_seconds < {warn}"]

    # ---- Overview -----------------------------------------------------------
    L.row("Overview")
    L.add(stat("Smallest Job TTL in force", "Smallest ttlSecondsAfterFinished over live Jobs (a Job without "
               "its own TTL counts with the TTL the controller will patch on).",
               [prom_target("min(" + q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')) + ")",
                            "TTL", "A", instant=True)],
               unit="s", no_value="no live Jobs"), 3, 4)
    L.add(stat("Recommended minimum TTL", "Largest recommended minimum Job TTL over the selected namespaces: "
               f"max(p{rt['quantile'] * 100:g} collection delay x {rt['factor']}, {rt['min_seconds']} s), from the "
               "recording rule (1d window) where loaded, else computed over the dashboard's time range.",
               [prom_target(f"max(\n{q.ttl_recommended()}\n)", "recommended", "A", instant=True)],
               unit="s"), 3, 4)
    L.add(stat("Collection delay p99", "p99 of Job finished -> status consumed, over the time range.",
               [prom_target(q.hq(0.99, cd, (), window="$__range"), "p99", "A", instant=True)],
               unit="s"), 3, 4)
    L.add(stat("Smallest remaining TTL margin", "Now: smallest finish + TTL - now over finished, uncollected "
               "Jobs that have a TTL. Empty when there are none.",
               [prom_target(f"min({q.agg('min', ('namespace',), sel('agentrun_job_ttl_margin_remaining_seconds'))})",
                            "remaining", "A", instant=True)],
               unit="s", th=margin_th, no_value="no Job at risk"), 3, 4)
    L.add(stat("Deleted before collection", "Jobs that disappeared before their status was consumed, in the "
               "time range.",
               [prom_target(q.counter("agentrun_job_deleted_before_collection_total", window="$__range"),
                            "deleted", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("red", 1)),
               links=[deleted_link(tr, Traces.VAR_NS, field=False)]), 3, 4)
    L.add(stat("TTL margin exceeded", "Jobs whose TTL margin was below zero in the time range (includes every "
               "Job deleted by its TTL before collection).",
               [prom_target(q.counter("agentrun_job_ttl_margin_exceeded_total", window="$__range"),
                            "exceeded", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("red", 1)),
               links=[tr.link("Jobs whose TTL margin was exceeded", "job.ttl", Traces.VAR_NS,
                              ["span.agentrun.job.ttl_margin_seconds < 0"], {})]), 3, 4)
    L.add(stat("Jobs without TTL", "Now: Jobs finished and collected that still have no TTL after the grace "
               "period; the TTL controller will not delete them.",
               [prom_target(f"sum({q.agg('max', ('namespace',), sel('agentrun_jobs_without_ttl'))})",
                            "without TTL", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("orange", 1))), 3, 4)
    L.add(stat("Smallest AgentRun retention", "Smallest AgentRun retention in force over live AgentRuns.",
               [prom_target("min(" + q.agg("min", ("namespace",), sel("agentrun_retention_seconds", 'stat="min"'))
                            + ")", "retention", "A", instant=True)],
               unit="s", no_value="no live AgentRuns"), 3, 4)

    # ---- Collection delay vs TTL ---------------------------------------------
    L.row("Collection delay vs TTL")
    L.add(timeseries("Collection delay vs TTL in force",
                     "p50 / p90 / p99 of Job finished -> status consumed, against the smallest TTL in force "
                     "and the recommended minimum TTL (largest over the selected namespaces).",
                     [prom_target(q.hq(0.5, cd), lg("delay p50"), "A"),
                      prom_target(q.hq(0.9, cd), lg("delay p90"), "B"),
                      prom_target(q.hq(0.99, cd), lg("delay p99"), "C"),
                      prom_target(q.agg("min", (), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                                  lg("TTL in force (min)"), "D"),
                      prom_target(q.agg("max", (), q.ttl_recommended()), lg("recommended minimum TTL"), "E")],
                     unit="s", log=True,
                     links=[tr.link("Collections with a TTL margin below warning", "job.collect", Traces.VAR_NS,
                                    low_margin_conds, {})],
                     overrides=[
                         {"matcher": {"id": "byFrameRefID", "options": "D"},
                          "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}},
                                         {"id": "custom.lineWidth", "value": 2}]},
                         {"matcher": {"id": "byFrameRefID", "options": "E"},
                          "properties": [{"id": "color", "value": {"fixedColor": "purple", "mode": "fixed"}},
                                         {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}]},
                     ]), 12, 9)
    L.add(timeseries("p99 collection delay and TTL by namespace",
                     "Per namespace: p99 collection delay, smallest TTL in force (dashed) and recommended minimum "
                     "TTL (dotted). Click a series for the collections of that namespace with a small margin.",
                     [prom_target(q.hq(0.99, cd, ("namespace",)), lg("delay p99 {{namespace}}"), "A"),
                      prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                                  lg("TTL {{namespace}}"), "B"),
                      prom_target(q.ttl_recommended(), lg("recommended {{namespace}}"), "C")],
                     unit="s", log=True,
                     links=[ns_link("Collections in ${__field.labels.namespace} with a TTL margin below warning",
                                    "job.collect", low_margin_conds, {})],
                     overrides=[
                         dashed("B"),
                         {"matcher": {"id": "byFrameRefID", "options": "C"},
                          "properties": [{"id": "custom.lineStyle", "value": {"dash": [0, 10], "fill": "dot"}}]},
                     ]), 12, 9)
    L.add(timeseries("Collection delay p90 by outcome",
                     "p90 collection delay by outcome: succeeded / failed (the Job's result) or missing (the "
                     "consuming write found the Job gone).",
                     [prom_target(q.hq(0.9, cd, ("outcome",)), lg("p90 {{outcome}}"), "A")],
                     unit="s", log=True), 12, 8)
    L.add(heatmap("Collection delay distribution", "Jobs per collection-delay bucket.",
                  prom_target(q.buckets(cd), "{{le}}", "A",
                              fmt="heatmap")), 12, 8)

    # ---- TTL margin ------------------------------------------------------------
    L.row("TTL margin")
    L.add(heatmap("TTL margin distribution", "TTL minus collection delay, one sample per Job when both are "
                  "known. Buckets at or below 0 are Jobs whose TTL expired before collection.",
                  prom_target(q.buckets(mg), "{{le}}", "A",
                              fmt="heatmap")), 12, 9)
    L.add(timeseries("TTL margin quantiles", "Low quantiles of the TTL margin (the small margins are the risk): "
                     f"p1, p10 and p50. Red below {crit} s, orange below {warn} s (the alert thresholds); below 0 "
                     "the TTL expired before the status was collected.",
                     [prom_target(q.hq(0.01, mg), lg("p1"), "A"),
                      prom_target(q.hq(0.1, mg), lg("p10"), "B"),
                      prom_target(q.hq(0.5, mg), lg("p50"), "C")],
                     unit="s", th=margin_th, th_style="line+area",
                     links=[tr.link("Jobs with a TTL margin below warning", "job.ttl", Traces.VAR_NS,
                                    low_margin_conds, {})]), 12, 9)
    L.add(timeseries("TTL margin p10 by namespace and TTL application",
                     "p10 TTL margin by namespace and ttl_applied (at_creation: TTL set when the Job was "
                     "created; after_collection: patched on after the status write). Click a series for the "
                     "Jobs of that namespace with a small margin.",
                     [prom_target(q.hq(0.1, mg, ("namespace", "ttl_applied")),
                                  lg("p10 {{namespace}} {{ttl_applied}}"), "A")],
                     unit="s", th=margin_th, th_style="line",
                     links=[ns_link("Jobs in ${__field.labels.namespace} with a TTL margin below warning", "job.ttl",
                                    low_margin_conds + ['span.agentrun.job.ttl_applied = "${__field.labels.ttl_applied}"'],
                                    {"agentrun.job.ttl_applied": "${__field.labels.ttl_applied}"})]), 12, 8)
    L.add(timeseries("Live remaining TTL margin",
                     "Smallest finish + TTL - now over finished, uncollected Jobs that have a TTL, by namespace. "
                     "Absent when no such Job exists. Reaching 0 means the TTL controller may delete a Job whose "
                     "status was not collected.",
                     [prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_margin_remaining_seconds")),
                                  lg("{{namespace}}"), "A")],
                     unit="s", th=margin_th, th_style="line+area",
                     links=[ns_link("Finished Jobs in ${__field.labels.namespace}", "job.run", [], {})]), 12, 8)
    L.add(timeseries("Jobs deleted before collection",
                     "Per interval, by namespace and runtime. Click a bar for the traces of those Jobs.",
                     [prom_target(q.counter("agentrun_job_deleted_before_collection_total", ("namespace", "runtime")),
                                  lg("{{namespace}} {{runtime}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[deleted_link(tr, Traces.FIELD_NS, field=True)]), 12, 8)
    L.add(timeseries("TTL margin exceeded",
                     "Jobs whose margin was below zero, per interval (includes every Job deleted by its TTL before "
                     "collection). Click a bar for the traces of those Jobs.",
                     [prom_target(q.counter("agentrun_job_ttl_margin_exceeded_total", ("namespace", "ttl_applied")),
                                  lg("{{namespace}} {{ttl_applied}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[ns_link("Jobs in ${__field.labels.namespace} whose TTL margin was exceeded", "job.ttl",
                                    ["span.agentrun.job.ttl_margin_seconds < 0",
                                     'span.agentrun.job.ttl_applied = "${__field.labels.ttl_applied}"'],
                                    {"agentrun.job.ttl_applied": "${__field.labels.ttl_applied}"})]), 12, 8)
    L.add(table("Recent Jobs deleted before collection",
                "The most recent Jobs deleted before their status was consumed, in the selected namespaces "
                "(traces data source).",
                [tr.query(None if tr.backend == "tempo" else "job.ttl", Traces.VAR_NS,
                          deleted_link_conds(), {"agentrun.job.deleted_before_collection": "true"}, limit=20)],
                [], ds=tr.ds), 24, 8)

    # ---- Missing-Job SLO ----------------------------------------------------------
    L.row("Missing-Job SLO")
    ratio_range = q.missing_ratio_raw((), window="$__range")
    L.add(stat("Missing-Job ratio", "Runs that ended JobMissing/WorkflowJobMissing / finished runs, over the "
               "time range.",
               [prom_target(ratio_range, "ratio", "A", instant=True)],
               unit="percentunit", decimals=3, color_mode="none"), 4, 5)
    L.add(stat("Objective", "The missing-Job SLO objective (dashboard variable slo_objective).",
               [prom_target("vector($slo_objective / 100)", "objective", "A", instant=True)],
               unit="percentunit", decimals=2, color_mode="none"), 4, 5)
    L.add(stat("Error budget remaining", "1 - (missing-Job ratio / (1 - objective)) over the time range. Below "
               "0 the objective is missed.",
               [prom_target(f"1 - (\n{ratio_range}\n) / {slo_budget}", "budget", "A", instant=True)],
               unit="percentunit", decimals=1,
               th=thresholds(("red", None), ("orange", 0), ("yellow", 0.25), ("green", 0.5))), 4, 5)
    L.add({**table("Error budget remaining by namespace",
                   "Per namespace, over the time range: finished runs, runs that ended JobMissing, the ratio and "
                   "the error budget left.",
                   [prom_target(q.counter("agentrun_runs_total", ("namespace",), window="$__range"),
                                "", "A", instant=True, fmt="table"),
                    prom_target(q.counter("agentrun_job_missing_total", ("namespace",), window="$__range")
                                + "\nor\n0 * " + q.counter("agentrun_runs_total", ("namespace",), window="$__range"),
                                "", "B", instant=True, fmt="table"),
                    prom_target(q.missing_ratio_raw(window="$__range"), "", "C", instant=True, fmt="table"),
                    prom_target(f"1 - (\n{q.missing_ratio_raw(window='$__range')}\n) / {slo_budget}", "", "D",
                                instant=True, fmt="table")],
                   [override_unit("Value #A", "none", "runs"),
                    override_unit("Value #B", "none", "missing"),
                    override_unit("Value #C", "percentunit", "missing ratio"),
                    {"matcher": {"id": "byName", "options": "Value #D"},
                     "properties": [{"id": "unit", "value": "percentunit"},
                                    {"id": "displayName", "value": "budget left"},
                                    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                    {"id": "thresholds", "value": thresholds(("red", None), ("orange", 0),
                                                                              ("yellow", 0.25), ("green", 0.5))}]}],
                   transformations=[{"id": "merge", "options": {}},
                                    {"id": "organize", "options": {"excludeByName": {"Time": True}}}],
                   sort_by="budget left")}, 12, 5)
    win = cfg["rules"]["missing_ratio_windows"]
    rule = cfg["rules"]["missing_ratio"]
    L.add(timeseries("Missing-Job error ratio vs objective",
                     "Missing-Job ratio by namespace: the recording rules over "
                     + ", ".join(win)
                     + " windows where loaded, and the ratio over the panel's rate interval from raw counters "
                     "(always). The dashed line is the error ratio the objective allows.",
                     [prom_target(q.missing_ratio_raw(), lg("{{namespace}}"), "A")]
                     + [prom_target(q.agg("max", ("namespace",), sel(rule.format(window=w))),
                                    lg(f"{{{{namespace}}}} {w}"), chr(ord("B") + i))
                        for i, w in enumerate(win)]
                     + [prom_target(f"vector{slo_budget}", "allowed by objective", "Z")],
                     unit="percentunit", min_=0,
                     links=[ns_link("Runs that ended JobMissing in ${__field.labels.namespace}", "agentrun",
                                    ['span.agentrun.reason =~ "JobMissing|WorkflowJobMissing"'], {"error": "true"})],
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "Z"},
                                 "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}},
                                                {"id": "custom.lineStyle",
                                                 "value": {"dash": [10, 10], "fill": "dash"}}]}]), 12, 8)
    burn = cfg["rules"]["burn_rates"]
    factors = sorted({f for _, f in burn})
    colors = ["yellow", "orange", "red", "dark-red"]
    L.add(timeseries("Error budget burn rate",
                     "Missing-Job ratio / allowed error ratio, by namespace: the recorded long windows of the "
                     "burn-rate alerts ("
                     + ", ".join(f"{w} > {f:g}" for w, f in burn)
                     + ") where loaded, and over the panel's rate interval from raw counters (always). 1 spends "
                     "the budget exactly over the SLO period; the lines mark the alert factors.",
                     [prom_target(f"(\n{q.missing_ratio_raw()}\n) / {slo_budget}", lg("{{namespace}}"), "A")]
                     + [prom_target(f"{q.agg('max', ('namespace',), sel(rule.format(window=w)))}\n/ {slo_budget}",
                                    lg(f"{{{{namespace}}}} {w}"), chr(ord("B") + i))
                        for i, (w, _) in enumerate(burn)],
                     unit="short", min_=0,
                     th=thresholds(("green", None), *[(colors[min(i, 3)], f) for i, f in enumerate(factors)]),
                     th_style="line"), 12, 8)

    # ---- TTL controller and configuration ----------------------------------------
    L.row("TTL controller and configuration")
    dl = "agentrun_job_ttl_deletion_lag_seconds"
    L.add(timeseries("TTL deletion lag", "TTL expiry -> deletion seen, for Jobs deleted by the TTL-after-finished "
                     "controller: p50 / p90 / p99.",
                     [prom_target(q.hq(0.5, dl), lg("p50"), "A"),
                      prom_target(q.hq(0.9, dl), lg("p90"), "B"),
                      prom_target(q.hq(0.99, dl), lg("p99"), "C")],
                     unit="s",
                     links=[tr.link("Jobs deleted by their TTL", "job.ttl", Traces.VAR_NS,
                                    ["span.agentrun.job.deletion_lag_seconds >= 0"], {})]), 12, 8)
    L.add(timeseries("Jobs without TTL", "Jobs finished and collected that still have no TTL after the grace "
                     "period, by namespace. They will not be garbage-collected by the TTL controller.",
                     [prom_target(q.agg("max", ("namespace",), sel("agentrun_jobs_without_ttl")),
                                  lg("{{namespace}}"), "A")],
                     unit="short", min_=0, decimals=0,
                     th=thresholds(("green", None), ("orange", 1)), th_style="line"), 12, 8)
    L.add(timeseries("Configured Job TTL", "TTL in force over live Jobs, by namespace: min (solid) and max "
                     "(dashed).",
                     [prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                                  lg("min {{namespace}}"), "A"),
                      prom_target(q.agg("max", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="max"')),
                                  lg("max {{namespace}}"), "B")],
                     unit="s", min_=0,
                     overrides=[dashed("B")]), 12, 8)
    L.add(timeseries("AgentRun retention", "AgentRun retention in force over live AgentRuns, by namespace: min "
                     "(solid) and max (dashed).",
                     [prom_target(q.agg("min", ("namespace",), sel("agentrun_retention_seconds", 'stat="min"')),
                                  lg("min {{namespace}}"), "A"),
                      prom_target(q.agg("max", ("namespace",), sel("agentrun_retention_seconds", 'stat="max"')),
                                  lg("max {{namespace}}"), "B")],
                     unit="s", min_=0,
                     overrides=[dashed("B")]), 12, 8)
    L.add(table("TTL and retention by namespace",
                "Now, per namespace: the Job TTL in force, the recommended minimum TTL, the p99 collection delay "
                "and the TTL left at that delay over the time range, Jobs without TTL and AgentRun retention.",
                [prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                             "", "A", instant=True, fmt="table"),
                 prom_target(q.agg("max", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="max"')),
                             "", "B", instant=True, fmt="table"),
                 prom_target(q.ttl_recommended(), "", "C", instant=True, fmt="table"),
                 prom_target(q.hq(0.99, cd, ("namespace",), window="$__range"), "", "D", instant=True,
                             fmt="table"),
                 prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"'))
                             + "\n- on (" + ", ".join(([cfg["cluster_label"]] if cfg["show_multi_cluster"] else [])
                                                      + ["namespace"]) + ")\n"
                             + q.hq(0.99, cd, ("namespace",), window="$__range"),
                             "", "E", instant=True, fmt="table"),
                 prom_target(q.agg("max", ("namespace",), sel("agentrun_jobs_without_ttl")), "", "F",
                             instant=True, fmt="table"),
                 prom_target(q.agg("min", ("namespace",), sel("agentrun_retention_seconds", 'stat="min"')),
                             "", "G", instant=True, fmt="table"),
                 prom_target(q.agg("max", ("namespace",), sel("agentrun_retention_seconds", 'stat="max"')),
                             "", "H", instant=True, fmt="table")],
                [override_unit("Value #A", "s", "TTL min"),
                 override_unit("Value #B", "s", "TTL max"),
                 override_unit("Value #C", "s", "recommended min TTL"),
                 override_unit("Value #D", "s", "p99 collection delay"),
                 {"matcher": {"id": "byName", "options": "Value #E"},
                  "properties": [{"id": "unit", "value": "s"},
                                 {"id": "displayName", "value": "margin at p99"},
                                 {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                 {"id": "thresholds", "value": margin_th}]},
                 override_unit("Value #F", "none", "Jobs without TTL"),
                 override_unit("Value #G", "s", "retention min"),
                 override_unit("Value #H", "s", "retention max")],
                transformations=[{"id": "merge", "options": {}},
                                 {"id": "organize", "options": {"excludeByName": {"Time": True}}}],
                sort_by="margin at p99"), 24, 8)

    return dashboard(cfg, "ttl", "TTL margin",
                     "Job collection delay against the Job TTL in force, the TTL margin, Jobs deleted before "
                     "collection, the missing-Job SLO and the TTL and retention configuration.",
                     L, slo=True)


def deleted_link_conds() -> list[str]:
    return ['((name = "job.ttl" && span.agentrun.job.deleted_before_collection = true) || '
            '(name = "job.run" && span.agentrun.job.outcome = "deleted"))']


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def render(cfg: dict) -> dict[str, str]:
    """File name -> rendered JSON text."""
    out = {}
    for key, build in (("lifecycle", lifecycle), ("ttl", ttl_margin)):
        out[cfg["files"][key]] = json.dumps(build(copy.deepcopy(cfg)), indent=2, sort_keys=True) + "\n"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT,
                    help="directory to write to (default: deploy/chart/dashboards, the committed copy)")
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if a file differs")
    ap.add_argument("--traces-backend", choices=("tempo", "jaeger"), help="override CONFIG traces_backend")
    ap.add_argument("--multi-cluster", action="store_true", help="show the cluster variable, split by cluster")
    args = ap.parse_args(argv)

    cfg = copy.deepcopy(CONFIG)
    if args.traces_backend:
        cfg["traces_backend"] = args.traces_backend
    if args.multi_cluster:
        cfg["show_multi_cluster"] = True

    stale = []
    for name, text in render(cfg).items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("stale (run python3 dashboards/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
