"""Panel builders (Grafana schema 39) and the grid layout, shared by every dashboard."""

from __future__ import annotations

PROM_DS = {"type": "prometheus", "uid": "${datasource}"}


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
