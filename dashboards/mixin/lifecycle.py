"""Dashboard "AgentRun / Job lifecycle": runs and outcomes, Job phase durations,
Jobs awaiting collection, missing Jobs and deletions, and the exporter's health."""

from __future__ import annotations

from .panels import dashed, heatmap, prom_target, stat, table, thresholds, timeseries
from .shell import Ctx, dashboard
from .traces import Traces


def runs(c: Ctx) -> None:
    """Row "Runs"."""
    cfg, q, tr, L = c.cfg, c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
    L.row("Runs")
    L.add(stat("Runs finished", "AgentRuns that reached a terminal phase in the time range.",
               [prom_target(q.counter("agentrun_runs_total", window="$__range"), "runs", "A",
                            instant=True)],
               decimals=0, no_value="0"), 4, 4)
    L.add(stat("Run success ratio", "Succeeded runs / finished runs in the time range.",
               [prom_target(
                   q.counter("agentrun_runs_total", (), 'outcome="succeeded"', window="$__range")
                   + "\n/\n" + q.counter("agentrun_runs_total", window="$__range"),
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
               [prom_target(f"sum({q.count('agentrun_job_awaiting_collection')})",
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
                     links=[tr.ns_link("Traces of runs in ${__field.labels.namespace} (${__field.labels.runtime})",
                                    "agentrun", ['span.agentrun.runtime = "${__field.labels.runtime}"'],
                                    {"agentrun.runtime": "${__field.labels.runtime}"})]), 12, 8)
    L.add(timeseries("Failed and cancelled runs by namespace",
                     "Rate (runs/s) of runs that ended Failed or Cancelled. Click a series for the traces of "
                     "failed runs.",
                     [prom_target(q.counter("agentrun_runs_total", ("namespace", "outcome"), 'outcome!="succeeded"',
                                            fn="rate"),
                                  lg("{{namespace}} {{outcome}}"), "A")],
                     unit="short", min_=0,
                     links=[tr.ns_link("Failed runs in ${__field.labels.namespace}", "agentrun",
                                    ["status = error"], {"error": "true"})]), 12, 8)
    L.add(table("Recent AgentRun traces",
                "The most recent AgentRun root spans in the selected namespaces (traces data source).",
                [tr.query("agentrun", Traces.VAR_NS, [], {}, limit=20)], [], ds=tr.ds), 12, 8)


def job_phases(c: Ctx) -> None:
    """Row "Job phases"."""
    q, tr, L = c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
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
                     links=[tr.ns_link("Job runs in ${__field.labels.namespace}", "job.run", [], {})]), 12, 9)
    L.add(heatmap("Job run phase distribution", "Jobs per bucket of the run phase (started -> finished).",
                  prom_target(q.buckets(ph, 'phase="run"'),
                              "{{le}}", "A", fmt="heatmap")), 12, 8)
    L.add(heatmap("Job pending phase distribution",
                  "Jobs per bucket of the pending phase (created -> started): scheduling and image pulls.",
                  prom_target(q.buckets(ph, 'phase="pending"'),
                              "{{le}}", "A", fmt="heatmap")), 12, 8)


def collection_and_missing_jobs(c: Ctx) -> None:
    """Row "Collection and missing Jobs"."""
    q, tr, L = c.q, c.tr, c.L
    sel, lg = q.sel, q.legend
    L.row("Collection and missing Jobs")
    L.add(timeseries("Jobs awaiting collection", "Finished Jobs whose status the AgentRun or step has not "
                     "consumed yet, by namespace.",
                     [prom_target(q.count("agentrun_job_awaiting_collection"),
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
                     links=[tr.ns_link("Runs that ended ${__field.labels.reason} in ${__field.labels.namespace}",
                                    "agentrun", ['span.agentrun.reason = "${__field.labels.reason}"'],
                                    {"agentrun.reason": "${__field.labels.reason}"})]), 12, 8)
    L.add(timeseries("Jobs deleted before collection",
                     "Jobs that disappeared before their status was consumed, per interval, by namespace and "
                     "runtime. Click a bar for the job.ttl (or job.run, if the Job never finished) spans.",
                     [prom_target(q.counter("agentrun_job_deleted_before_collection_total", ("namespace", "runtime")),
                                  lg("{{namespace}} {{runtime}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0,
                     links=[tr.deleted_link(Traces.FIELD_NS, field=True)]), 12, 8)
    L.add(timeseries("Jobs deleted with their run",
                     "Jobs the agents controller deleted because their AgentRun was deleted, per interval: reason "
                     "cancel (the run was still running) or retention (it had finished). Not incidents; a cancel "
                     "rate that jumps is worth a look.",
                     [prom_target(q.counter("agentrun_job_deleted_with_run_total", ("namespace", "reason")),
                                  lg("{{namespace}} {{reason}}"), "A")],
                     unit="short", bars=True, min_=0, decimals=0), 12, 8)


def exporter_health(c: Ctx) -> None:
    """Row "Exporter health"."""
    q, L = c.q, c.L
    lg = q.legend
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


def build(cfg: dict) -> dict:
    c = Ctx(cfg)
    for row in (runs, job_phases, collection_and_missing_jobs, exporter_health):
        row(c)
    return dashboard(cfg, "lifecycle", "Job lifecycle",
                     "AgentRun runs and outcomes, Job phase durations, Jobs awaiting collection, missing Jobs and "
                     "deletions before collection, and the health of agentrun-lifecycle-exporter.",
                     c.L, slo=False)
