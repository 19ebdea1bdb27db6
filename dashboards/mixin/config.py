"""The dashboards' configuration (the `_config` of a monitoring mixin).

Two parts:
  - what only the dashboards have (uids, files, tags, refresh, variables, the
    traces back end, the recording-rule names), in DASHBOARD below;
  - what the alert rules have too (cluster label, thresholds, SLO objective,
    burn rates and windows, recommended TTL, the exporter's service.name), read
    from the Helm chart's values, deploy/chart/values.yaml: the same values
    that `deploy/chart/templates/_rules.tpl` renders the rules from. Change them
    there, and both the rules (deploy/render-alerts.sh) and the dashboards
    (dashboards/generate.py) follow.
"""

from __future__ import annotations

import copy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "chart"
VALUES = CHART / "values.yaml"
# The one committed copy of the rendered JSON: Helm reads only files inside the
# chart (.Files.Glob in deploy/chart/templates/dashboards.yaml).
OUT = CHART / "dashboards"

DASHBOARD = {
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
    # Show the cluster variable and split series by cluster.
    "show_multi_cluster": False,
    # Metric whose label values list the clusters and namespaces.
    "cluster_variable_metric": "agentrun_exporter_build_info",
    "namespace_variable_metric": "agentrun_runs_total",
    # Traces: "tempo" (TraceQL) or "jaeger" (service/operation/tags search).
    "traces_backend": "tempo",
    # Missing-Job SLO objectives offered by the dashboard variable (percent);
    # the default is alerts.slo.objective, added here when missing.
    "slo_objectives_percent": ["99", "99.5", "99.9", "99.95", "99.99"],
    # Recording rules of deploy/chart/templates/_rules.tpl. Every panel that
    # uses one also works from raw metrics (an `or` fallback, or a second
    # target).
    "rules": {
        "ttl_recommended_min": "namespace:agentrun_job_ttl_recommended_min_seconds:histogram_quantile",
        "missing_ratio": "namespace:agentrun_job_missing:ratio_rate{window}",
    },
}


def load_values(*extra: Path) -> dict:
    """The chart's default values, with each file of `extra` merged over them
    the way `helm -f` does (maps merge key by key, everything else replaces)."""
    try:
        import yaml  # PyYAML: Debian python3-yaml, installed by tests/e2e/testbed/deps.sh
    except ImportError:
        raise SystemExit("dashboards: PyYAML is needed to read deploy/chart/values.yaml "
                         "(Debian: apt-get install python3-yaml; elsewhere: pip install pyyaml)") from None

    def merge(base, over):
        if isinstance(base, dict) and isinstance(over, dict):
            out = dict(base)
            for k, v in over.items():
                out[k] = merge(base.get(k), v) if k in base else v
            return out
        return over

    values: dict = {}
    for path in (VALUES, *extra):
        with open(path, encoding="utf-8") as f:
            values = merge(values, yaml.safe_load(f) or {})
    return values


def percent(ratio: float) -> str:
    """0.999 -> "99.9" (as the SLO variable spells it)."""
    return f"{round(ratio * 100, 6):g}"


def from_values(values: dict) -> dict:
    """The settings shared with the alert rules, named as the dashboards use them."""
    a = values["alerts"]
    th = a["thresholds"]
    slo = a["slo"]
    rt = a["recommendedTtl"]
    burn = [[b["long"], b["factor"]] for b in slo["burnRates"]]
    return {
        # The label that tells clusters apart (an external label, or one added
        # by the remote-write / OTLP pipeline). Series without it still match.
        "cluster_label": a["clusterLabel"],
        # OTEL_SERVICE_NAME of the exporter (a hidden textbox variable, so a URL
        # parameter var-trace_service=... overrides it).
        "service_name": values["exporter"]["otel"]["serviceName"],
        # Remaining TTL margin warning / critical, oldest uncollected Job.
        "ttl_margin_warning_seconds": th["ttlMarginRemainingWarningSeconds"],
        "ttl_margin_critical_seconds": th["ttlMarginRemainingCriticalSeconds"],
        "awaiting_collection_max_age_seconds": th["awaitingCollectionMaxAgeSeconds"],
        # Missing-Job SLO: share of finished runs that did NOT end JobMissing /
        # WorkflowJobMissing.
        "slo_objective_default": percent(slo["objective"]),
        # The burn-rate alerts as (long window, factor), and the recorded
        # error-ratio windows the dashboards show: the long windows, in order.
        "burn_rates": burn,
        "missing_ratio_windows": list(dict.fromkeys(w for w, _ in burn)),
        # The recommended minimum Job TTL: max(quantile of the collection delay
        # over `window` * factor, min). The rule uses `window`; the raw fallback
        # the dashboard's time range.
        "ttl_recommended": {"quantile": rt["quantile"], "factor": rt["safetyFactor"],
                            "min_seconds": rt["minSeconds"], "window": rt["window"]},
    }


def load(*values_files: Path) -> dict:
    """The full configuration: DASHBOARD plus the chart's values."""
    cfg = copy.deepcopy(DASHBOARD)
    cfg.update(from_values(load_values(*values_files)))
    objectives = cfg["slo_objectives_percent"]
    if cfg["slo_objective_default"] not in objectives:
        objectives.append(cfg["slo_objective_default"])
        objectives.sort(key=float)
    return cfg
