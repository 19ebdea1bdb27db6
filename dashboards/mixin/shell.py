"""The dashboard shell: template variables, links, time settings, identity."""

from __future__ import annotations

from .panels import PROM_DS, Layout


def templating(cfg: dict, slo: bool) -> dict:
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
        "templating": templating(cfg, slo),
        "time": {"from": cfg["time_from"], "to": "now"},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]},
        "timezone": cfg["timezone"],
        "title": cfg["title_prefix"] + title,
        "uid": cfg["uids"][key],
        "version": 1,
        "weekStart": "",
    }


class Ctx:
    """What every row of a dashboard is built with: the configuration, the
    PromQL and trace helpers bound to it, and the layout the panels flow into."""

    def __init__(self, cfg: dict):
        from .promql import Q
        from .traces import Traces

        self.cfg = cfg
        self.q = Q(cfg)
        self.tr = Traces(cfg)
        self.L = Layout()
