"""Dashboard "AgentRun / TTL margin": collection delay against the Job TTL in
force, the TTL margin, Jobs deleted before collection, the missing-Job SLO and
the TTL and retention configuration."""

from __future__ import annotations

from .panels import dashed, heatmap, override_unit, prom_target, stat, table, thresholds, timeseries
from .shell import Ctx, dashboard
from .traces import Traces

CD = "agentrun_job_collection_delay_seconds"
MG = "agentrun_job_ttl_margin_seconds"
# The error ratio the SLO objective (dashboard variable, percent) allows.
SLO_BUDGET = "(1 - $slo_objective / 100)"


def margin_thresholds(cfg: dict) -> dict:
    """Red below the critical remaining-margin alert threshold, orange below the warning one."""
    return thresholds(("red", None), ("orange", cfg["ttl_margin_critical_seconds"]),
                      ("green", cfg["ttl_margin_warning_seconds"]))


def low_margin_conds(cfg: dict) -> list[str]:
    """Spans of Jobs whose TTL margin is below the warning threshold."""
    return [f"span.agentrun.job.ttl_margin_seconds < {cfg['ttl_margin_warning_seconds']}"]


def overview(c: Ctx) -> None:
    """Row "Overview"."""
    q, tr, L = c.q, c.tr, c.L
    sel = q.sel
    rt = c.cfg["ttl_recommended"]
    margin_th = margin_thresholds(c.cfg)
    L.row("Overview")
    L.add(stat("Smallest Job TTL in force", "Smallest ttlSecondsAfterFinished over live Jobs (a Job without "
               "its own TTL counts with the TTL the controller will patch on).",
               [prom_target("min(" + q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')) + ")",
                            "TTL", "A", instant=True)],
               unit="s", no_value="no live Jobs"), 3, 4)
    L.add(stat("Recommended minimum TTL", "Largest recommended minimum Job TTL over the selected namespaces: "
               f"max(p{rt['quantile'] * 100:g} collection delay x {rt['factor']}, {rt['min_seconds']} s), from the "
               f"recording rule ({rt['window']} window) where loaded, else computed over the dashboard's time range.",
               [prom_target(f"max(\n{q.ttl_recommended()}\n)", "recommended", "A", instant=True)],
               unit="s"), 3, 4)
    L.add(stat("Collection delay p99", "p99 of Job finished -> status consumed, over the time range.",
               [prom_target(q.hq(0.99, CD, (), window="$__range"), "p99", "A", instant=True)],
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
               links=[tr.deleted_link(Traces.VAR_NS, field=False)]), 3, 4)
    L.add(stat("TTL margin exceeded", "Jobs whose TTL margin was below zero in the time range (includes every "
               "Job deleted by its TTL before collection).",
               [prom_target(q.counter("agentrun_job_ttl_margin_exceeded_total", window="$__range"),
                            "exceeded", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("red", 1)),
               links=[tr.link("Jobs whose TTL margin was exceeded", "job.ttl", Traces.VAR_NS,
                              ["span.agentrun.job.ttl_margin_seconds < 0"], {})]), 3, 4)
    L.add(stat("Jobs without TTL", "Now: Jobs finished and collected that still have no TTL after the grace "
               "period; the TTL controller will not delete them.",
               [prom_target(f"sum({q.count('agentrun_jobs_without_ttl')})",
                            "without TTL", "A", instant=True)],
               decimals=0, no_value="0", th=thresholds(("green", None), ("orange", 1))), 3, 4)
    L.add(stat("Smallest AgentRun retention", "Smallest AgentRun retention in force over live AgentRuns.",
               [prom_target("min(" + q.agg("min", ("namespace",), sel("agentrun_retention_seconds", 'stat="min"'))
                            + ")", "retention", "A", instant=True)],
               unit="s", no_value="no live AgentRuns"), 3, 4)


def collection_delay_vs_ttl(c: Ctx) -> None:
    """Row "Collection delay vs TTL"."""
    q, tr, L = c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
    low_margin = low_margin_conds(c.cfg)
    L.row("Collection delay vs TTL")
    L.add(timeseries("Collection delay vs TTL in force",
                     "p50 / p90 / p99 of Job finished -> status consumed, against the smallest TTL in force "
                     "and the recommended minimum TTL (largest over the selected namespaces).",
                     [prom_target(q.hq(0.5, CD), lg("delay p50"), "A"),
                      prom_target(q.hq(0.9, CD), lg("delay p90"), "B"),
                      prom_target(q.hq(0.99, CD), lg("delay p99"), "C"),
                      prom_target(q.agg("min", (), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                                  lg("TTL in force (min)"), "D"),
                      prom_target(q.agg("max", (), q.ttl_recommended()), lg("recommended minimum TTL"), "E")],
                     unit="s", log=True,
                     links=[tr.link("Collections with a TTL margin below warning", "job.collect", Traces.VAR_NS,
                                    low_margin, {})],
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
                     [prom_target(q.hq(0.99, CD, ("namespace",)), lg("delay p99 {{namespace}}"), "A"),
                      prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"')),
                                  lg("TTL {{namespace}}"), "B"),
                      prom_target(q.ttl_recommended(), lg("recommended {{namespace}}"), "C")],
                     unit="s", log=True,
                     links=[tr.ns_link("Collections in ${__field.labels.namespace} with a TTL margin below warning",
                                    "job.collect", low_margin, {})],
                     overrides=[
                         dashed("B"),
                         {"matcher": {"id": "byFrameRefID", "options": "C"},
                          "properties": [{"id": "custom.lineStyle", "value": {"dash": [0, 10], "fill": "dot"}}]},
                     ]), 12, 9)
    L.add(timeseries("Collection delay p90 by outcome",
                     "p90 collection delay by outcome: succeeded / failed (the Job's result) or missing (the "
                     "consuming write found the Job gone).",
                     [prom_target(q.hq(0.9, CD, ("outcome",)), lg("p90 {{outcome}}"), "A")],
                     unit="s", log=True), 12, 8)
    L.add(heatmap("Collection delay distribution", "Jobs per collection-delay bucket.",
                  prom_target(q.buckets(CD), "{{le}}", "A",
                              fmt="heatmap")), 12, 8)


def margin(c: Ctx) -> None:
    """Row "TTL margin"."""
    q, tr, L = c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
    warn = c.cfg["ttl_margin_warning_seconds"]
    crit = c.cfg["ttl_margin_critical_seconds"]
    margin_th = margin_thresholds(c.cfg)
    low_margin = low_margin_conds(c.cfg)
    L.row("TTL margin")
    L.add(heatmap("TTL margin distribution", "TTL minus collection delay, one sample per Job when both are "
                  "known. Buckets at or below 0 are Jobs whose TTL expired before collection.",
                  prom_target(q.buckets(MG), "{{le}}", "A",
                              fmt="heatmap")), 12, 9)
    L.add(timeseries("TTL margin quantiles", "Low quantiles of the TTL margin (the small margins are the risk): "
                     f"p1, p10 and p50. Red below {crit} s, orange below {warn} s (the alert thresholds); below 0 "
                     "the TTL expired before the status was collected.",
                     [prom_target(q.hq(0.01, MG), lg("p1"), "A"),
                      prom_target(q.hq(0.1, MG), lg("p10"), "B"),
                      prom_target(q.hq(0.5, MG), lg("p50"), "C")],
                     unit="s", th=margin_th, th_style="line+area",
                     links=[tr.link("Jobs with a TTL margin below warning", "job.ttl", Traces.VAR_NS,
                                    low_margin, {})]), 12, 9)
    L.add(timeseries("TTL margin p10 by namespace and TTL application",
                     "p10 TTL margin by namespace and ttl_applied (at_creation: TTL set when the Job was "
                     "created; after_collection: patched on after the status write). Click a series for the "
                     "Jobs of that namespace with a small margin.",
                     [prom_target(q.hq(0.1, MG, ("namespace", "ttl_applied")),
                                  lg("p10 {{namespace}} {{ttl_applied}}"), "A")],
                     unit="s", th=margin_th, th_style="line",
                     links=[tr.ns_link("Jobs in ${__field.labels.namespace} with a TTL margin below warning", "job.ttl",
                                    low_margin + ['span.agentrun.job.ttl_applied = "${__field.labels.ttl_applied}"'],
                                    {"agentrun.job.ttl_applied": "${__field.labels.ttl_applied}"})]), 12, 8)
    L.add(timeseries("Live remaining TTL margin",
                     "Smallest finish + TTL - now over finished, uncollected Jobs that have a TTL, by namespace. "
                     "Absent when no such Job exists. Reaching 0 means the TTL controller may delete a Job whose "
                     "status was not collected.",
                     [prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_margin_remaining_seconds")),
                                  lg("{{namespace}}"), "A")],
                     unit="s", th=margin_th, th_style="line+area",
                     links=[tr.ns_link("Finished Jobs in ${__field.labels.namespace}", "job.run", [], {})]), 12, 8)
    L.add(timeseries("Jobs deleted before collection",
                     "Per interval, by namespace and runtime. Click a bar for the traces of those Jobs.",
                     [prom_target(q.counter("agentrun_job_deleted_before_collection_total", ("namespace", "runtime")),
                                  lg("{{namespace}} {{runtime}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[tr.deleted_link(Traces.FIELD_NS, field=True)]), 12, 8)
    L.add(timeseries("TTL margin exceeded",
                     "Jobs whose margin was below zero, per interval (includes every Job deleted by its TTL before "
                     "collection). Click a bar for the traces of those Jobs.",
                     [prom_target(q.counter("agentrun_job_ttl_margin_exceeded_total", ("namespace", "ttl_applied")),
                                  lg("{{namespace}} {{ttl_applied}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[tr.ns_link("Jobs in ${__field.labels.namespace} whose TTL margin was exceeded", "job.ttl",
                                    ["span.agentrun.job.ttl_margin_seconds < 0",
                                     'span.agentrun.job.ttl_applied = "${__field.labels.ttl_applied}"'],
                                    {"agentrun.job.ttl_applied": "${__field.labels.ttl_applied}"})]), 12, 8)
    L.add(table("Recent Jobs deleted before collection",
                "The most recent Jobs deleted before their status was consumed, in the selected namespaces "
                "(traces data source).",
                [tr.query(None if tr.backend == "tempo" else "job.ttl", Traces.VAR_NS,
                          list(tr.DELETED_CONDS), {"agentrun.job.deleted_before_collection": "true"}, limit=20)],
                [], ds=tr.ds), 24, 8)


def missing_job_slo(c: Ctx) -> None:
    """Row "Missing-Job SLO"."""
    cfg, q, tr, L = c.cfg, c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
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
               [prom_target(f"1 - (\n{ratio_range}\n) / {SLO_BUDGET}", "budget", "A", instant=True)],
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
                    prom_target(f"1 - (\n{q.missing_ratio_raw(window='$__range')}\n) / {SLO_BUDGET}", "", "D",
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
    win = cfg["missing_ratio_windows"]
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
                     + [prom_target(f"vector{SLO_BUDGET}", "allowed by objective", "Z")],
                     unit="percentunit", min_=0,
                     links=[tr.ns_link("Runs that ended JobMissing in ${__field.labels.namespace}", "agentrun",
                                    ['span.agentrun.reason =~ "JobMissing|WorkflowJobMissing"'], {"error": "true"})],
                     overrides=[{"matcher": {"id": "byFrameRefID", "options": "Z"},
                                 "properties": [{"id": "color", "value": {"fixedColor": "red", "mode": "fixed"}},
                                                {"id": "custom.lineStyle",
                                                 "value": {"dash": [10, 10], "fill": "dash"}}]}]), 12, 8)
    burn = cfg["burn_rates"]
    factors = sorted({f for _, f in burn})
    colors = ["yellow", "orange", "red", "dark-red"]
    L.add(timeseries("Error budget burn rate",
                     "Missing-Job ratio / allowed error ratio, by namespace: the recorded long windows of the "
                     "burn-rate alerts ("
                     + ", ".join(f"{w} > {f:g}" for w, f in burn)
                     + ") where loaded, and over the panel's rate interval from raw counters (always). 1 spends "
                     "the budget exactly over the SLO period; the lines mark the alert factors.",
                     [prom_target(f"(\n{q.missing_ratio_raw()}\n) / {SLO_BUDGET}", lg("{{namespace}}"), "A")]
                     + [prom_target(f"{q.agg('max', ('namespace',), sel(rule.format(window=w)))}\n/ {SLO_BUDGET}",
                                    lg(f"{{{{namespace}}}} {w}"), chr(ord("B") + i))
                        for i, (w, _) in enumerate(burn)],
                     unit="short", min_=0,
                     th=thresholds(("green", None), *[(colors[min(i, 3)], f) for i, f in enumerate(factors)]),
                     th_style="line"), 12, 8)


def ttl_controller_and_configuration(c: Ctx) -> None:
    """Row "TTL controller and configuration"."""
    cfg, q, tr, L = c.cfg, c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
    margin_th = margin_thresholds(c.cfg)
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
                     [prom_target(q.count("agentrun_jobs_without_ttl"),
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
                 prom_target(q.hq(0.99, CD, ("namespace",), window="$__range"), "", "D", instant=True,
                             fmt="table"),
                 prom_target(q.agg("min", ("namespace",), sel("agentrun_job_ttl_seconds", 'stat="min"'))
                             + "\n- on (" + ", ".join(([cfg["cluster_label"]] if cfg["show_multi_cluster"] else [])
                                                      + ["namespace"]) + ")\n"
                             + q.hq(0.99, CD, ("namespace",), window="$__range"),
                             "", "E", instant=True, fmt="table"),
                 prom_target(q.count("agentrun_jobs_without_ttl"), "", "F",
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


def build(cfg: dict) -> dict:
    c = Ctx(cfg)
    for row in (overview, collection_delay_vs_ttl, margin, missing_job_slo, ttl_controller_and_configuration):
        row(c)
    return dashboard(cfg, "ttl", "TTL margin",
                     "Job collection delay against the Job TTL in force, the TTL margin, Jobs deleted before "
                     "collection, the missing-Job SLO and the TTL and retention configuration.",
                     c.L, slo=True)
