"""The Grafana dashboards of agentrun-lifecycle-exporter, as code.

    config.py       the configuration: dashboard settings, plus the chart's alert values
    promql.py       PromQL building blocks (selectors, summed counters, count gauges, quantiles, rules with fallbacks)
    traces.py       trace searches and Explore links (Tempo or Jaeger)
    panels.py       panel builders and the grid layout
    shell.py        template variables and the dashboard around the panels
    lifecycle.py    "AgentRun / Job lifecycle", one function per row
    ttl_margin.py   "AgentRun / TTL margin", one function per row

dashboards/generate.py is the command line.
"""

from __future__ import annotations

import copy
import json

from . import lifecycle, ttl_margin

# key (in config "uids"/"files") -> builder
DASHBOARDS = {"lifecycle": lifecycle.build, "ttl": ttl_margin.build}


def render(cfg: dict) -> dict[str, str]:
    """File name -> rendered JSON text."""
    return {cfg["files"][key]: json.dumps(build(copy.deepcopy(cfg)), indent=2, sort_keys=True) + "\n"
            for key, build in DASHBOARDS.items()}
