{{/*
The alerting and recording rules: the one place their text lives. Input: the `alerts` values. Output: a
Prometheus rules document starting with "groups:". Used by templates/prometheusrule.yaml (as spec) and by
templates/rules-file.yaml, whose default rendering is alerts/agentrun-lifecycle.rules.yaml.

Aggregations keep the cluster label and `namespace` and never match or group on job/instance (they differ between
the scrape and the OTLP push paths). With one sidecar per controller replica, only the one whose pod holds the
controller's Lease (agentrun_exporter_leader 1) counts lifecycle events and reports the domain gauges; a standby's
counters sit at zero. After a failover the old leader's series stop and the new leader's go on from their own
values, each event counted by exactly one exporter. So counter and histogram increases are summed across exporters
(a max would drop the old leader's part of the window), and domain gauges, reported by one exporter at a time, take
the aggregate that stays right in the seconds where the old leader's last sample and the new leader's first one
coexist: min for a time remaining, max for an age or a count (a sum would double the count then). The
exporter's own metrics (agentrun_exporter_*) are per exporter: counters summed, flags combined with max.
*/}}
{{- define "agentrun-lifecycle-exporter.ruleGroups" -}}
{{- $a := . -}}
{{- $c := $a.clusterLabel -}}
{{- $t := $a.thresholds -}}
{{- $f := $a.for -}}
{{- $w := $a.windows -}}
{{- $rb := $a.runbookBaseURL -}}
{{- $rt := $a.recommendedTtl -}}
{{- $extra := "" -}}
{{- range $k, $v := $a.labels -}}
{{- $extra = printf "%s\n      %s: %s" $extra $k (toString $v | quote) -}}
{{- end -}}
{{- range $a.slo.burnRates -}}
{{- if not (and (has .long $a.slo.windows) (has .short $a.slo.windows)) -}}
{{- fail (printf "alerts.slo.burnRates: windows %s/%s must be listed in alerts.slo.windows" .long .short) -}}
{{- end -}}
{{- end -}}
groups:
- name: agentrun-lifecycle-ttl.rules
  rules:
  - record: namespace:agentrun_job_collection_delay_seconds:histogram_quantile
    expr: |-
      histogram_quantile(0.99, sum by ({{ $c }}, namespace, le) (rate(agentrun_job_collection_delay_seconds_bucket[{{ $w.collectionDelay }}]))) >= 0
    labels:
      quantile: "0.99"
  - record: namespace:agentrun_job_ttl_seconds:min
    expr: |-
      min by ({{ $c }}, namespace) (agentrun_job_ttl_seconds{stat="min"})
  - record: namespace:agentrun_job_ttl_recommended_min_seconds:histogram_quantile
    expr: |-
      clamp_min(
        histogram_quantile({{ $rt.quantile }}, sum by ({{ $c }}, namespace, le) (rate(agentrun_job_collection_delay_seconds_bucket[{{ $rt.window }}])))
        * {{ $rt.safetyFactor }},
        {{ $rt.minSeconds | int64 }}
      ) >= 0
    labels:
      quantile: {{ toString $rt.quantile | quote }}
- name: agentrun-lifecycle-slo.rules
  rules:
  {{- range $a.slo.windows }}
  - record: namespace:agentrun_job_missing:ratio_rate{{ . }}
    expr: |-
      sum by ({{ $c }}, namespace) (rate(agentrun_job_missing_total[{{ . }}]))
      /
      sum by ({{ $c }}, namespace) (rate(agentrun_runs_total[{{ . }}]))
  {{- end }}
- name: agentrun-lifecycle-jobs
  rules:
  - alert: AgentRunJobTTLMarginLow
    expr: |-
      min by ({{ $c }}, namespace) (agentrun_job_ttl_margin_remaining_seconds) < {{ $t.ttlMarginRemainingWarningSeconds | int64 }}
    for: {{ $f.ttlMarginRemainingWarning }}
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: A finished AgentRun Job nears its TTL deletion and its status has not been collected yet.
      description: '{{`The oldest uncollected finished Job in namespace {{ $labels.namespace }} reaches its TTL in {{ $value | humanizeDuration }}`}} (warning below {{ $t.ttlMarginRemainingWarningSeconds | int64 }}s).'
      runbook_url: {{ $rb }}#agentrunjobttlmarginlow
  - alert: AgentRunJobTTLMarginLow
    expr: |-
      min by ({{ $c }}, namespace) (agentrun_job_ttl_margin_remaining_seconds) < {{ $t.ttlMarginRemainingCriticalSeconds | int64 }}
    for: {{ $f.ttlMarginRemainingCritical }}
    labels:
      severity: critical{{ $extra }}
    annotations:
      summary: A finished AgentRun Job nears its TTL deletion and its status has not been collected yet.
      description: '{{`The oldest uncollected finished Job in namespace {{ $labels.namespace }} reaches its TTL in {{ $value | humanizeDuration }}`}} (critical below {{ $t.ttlMarginRemainingCriticalSeconds | int64 }}s).'
      runbook_url: {{ $rb }}#agentrunjobttlmarginlow
  - alert: AgentRunJobCollectionDelayNearTTL
    expr: |-
      max by ({{ $c }}, namespace) (namespace:agentrun_job_collection_delay_seconds:histogram_quantile{quantile="0.99"})
      / on ({{ $c }}, namespace)
      min by ({{ $c }}, namespace) (min_over_time(agentrun_job_ttl_seconds{stat="min"}[{{ $w.collectionDelay }}]))
      > {{ $t.collectionDelayTtlRatioWarning }}
    for: {{ $f.collectionDelayNearTtlWarning }}
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: The p99 delay between a Job finishing and its status being collected approaches the Job TTL.
      description: '{{`The p99 collection delay in namespace {{ $labels.namespace }} is {{ $value | humanizePercentage }} of the smallest Job TTL in force`}} (warning above {{ $t.collectionDelayTtlRatioWarning }}, window {{ $w.collectionDelay }}).'
      runbook_url: {{ $rb }}#agentrunjobcollectiondelaynearttl
  - alert: AgentRunJobCollectionDelayNearTTL
    expr: |-
      max by ({{ $c }}, namespace) (namespace:agentrun_job_collection_delay_seconds:histogram_quantile{quantile="0.99"})
      / on ({{ $c }}, namespace)
      min by ({{ $c }}, namespace) (min_over_time(agentrun_job_ttl_seconds{stat="min"}[{{ $w.collectionDelay }}]))
      > {{ $t.collectionDelayTtlRatioCritical }}
    for: {{ $f.collectionDelayNearTtlCritical }}
    labels:
      severity: critical{{ $extra }}
    annotations:
      summary: The p99 delay between a Job finishing and its status being collected approaches the Job TTL.
      description: '{{`The p99 collection delay in namespace {{ $labels.namespace }} is {{ $value | humanizePercentage }} of the smallest Job TTL in force`}} (critical above {{ $t.collectionDelayTtlRatioCritical }}, window {{ $w.collectionDelay }}).'
      runbook_url: {{ $rb }}#agentrunjobcollectiondelaynearttl
  - alert: AgentRunJobDeletedBeforeCollection
    {{- /* The event alerts sum: across a failover the old and the new leader each counted part of the window. */}}
    expr: |-
      sum by ({{ $c }}, namespace, runtime) (increase(agentrun_job_deleted_before_collection_total[{{ $w.events }}])) > 0
    for: 0m
    labels:
      severity: critical{{ $extra }}
    annotations:
      summary: An AgentRun Job was deleted before the controller collected its status.
      description: '{{`{{ printf "%.0f" $value }} Job(s) of runtime {{ $labels.runtime }} in namespace {{ $labels.namespace }} disappeared before the AgentRun status consumed them`}} (last {{ $w.events }}).'
      runbook_url: {{ $rb }}#agentrunjobdeletedbeforecollection
  - alert: AgentRunJobTTLMarginExceeded
    expr: |-
      sum by ({{ $c }}, namespace, runtime, ttl_applied) (increase(agentrun_job_ttl_margin_exceeded_total[{{ $w.events }}])) > 0
    for: 0m
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: An AgentRun Job status was collected after its TTL had already expired.
      description: '{{`{{ printf "%.0f" $value }} Job(s) of runtime {{ $labels.runtime }} in namespace {{ $labels.namespace }} (TTL applied {{ $labels.ttl_applied }}) had a negative TTL margin`}} (last {{ $w.events }}).'
      runbook_url: {{ $rb }}#agentrunjobttlmarginexceeded
  - alert: AgentRunJobMissing
    expr: |-
      sum by ({{ $c }}, namespace, runtime, reason) (increase(agentrun_job_missing_total[{{ $w.events }}])) > 0
    for: 0m
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: An AgentRun failed because its Job was missing when the controller collected its status.
      description: '{{`{{ printf "%.0f" $value }} run(s) of runtime {{ $labels.runtime }} in namespace {{ $labels.namespace }} ended with {{ $labels.reason }}`}} (last {{ $w.events }}).'
      runbook_url: {{ $rb }}#agentrunjobmissing
  - alert: AgentRunJobCollectionStalled
    expr: |-
      max by ({{ $c }}, namespace) (agentrun_job_awaiting_collection_max_age_seconds) > {{ $t.awaitingCollectionMaxAgeSeconds | int64 }}
    for: {{ $f.collectionStalled }}
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: Finished AgentRun Jobs are waiting too long for the controller to collect their status.
      description: '{{`The oldest finished Job in namespace {{ $labels.namespace }} has waited {{ $value | humanizeDuration }} for its status to be collected`}} (threshold {{ $t.awaitingCollectionMaxAgeSeconds | int64 }}s).'
      runbook_url: {{ $rb }}#agentrunjobcollectionstalled
  - alert: AgentRunJobsWithoutTTL
    {{- /* A count from one exporter at a time: max, as a sum would double it while the old and the new leader's
    samples coexist after a failover. */}}
    expr: |-
      max by ({{ $c }}, namespace) (agentrun_jobs_without_ttl) > 0
    for: {{ $f.jobsWithoutTtl }}
    labels:
      severity: info{{ $extra }}
    annotations:
      summary: Collected AgentRun Jobs have no TTL and will not be garbage-collected by the TTL controller.
      description: '{{`{{ $value }} collected Job(s) in namespace {{ $labels.namespace }} still have no ttlSecondsAfterFinished`}} (for {{ $f.jobsWithoutTtl }}).'
      runbook_url: {{ $rb }}#agentrunjobswithoutttl
  - alert: AgentRunJobTTLBelowRecommended
    expr: |-
      namespace:agentrun_job_ttl_seconds:min
      < on ({{ $c }}, namespace)
      max by ({{ $c }}, namespace) (namespace:agentrun_job_ttl_recommended_min_seconds:histogram_quantile)
    for: {{ $f.ttlBelowRecommended }}
    labels:
      severity: info{{ $extra }}
    annotations:
      summary: The Job TTL in force is below the recommended minimum derived from the observed collection delay.
      description: '{{`The smallest Job TTL in force in namespace {{ $labels.namespace }} ({{ $value | humanizeDuration }}) is below the recommended minimum`}} (quantile {{ $rt.quantile }} of the collection delay over {{ $rt.window }} x {{ $rt.safetyFactor }}).'
      runbook_url: {{ $rb }}#agentrunjobttlbelowrecommended
- name: agentrun-lifecycle-slo
  rules:
  {{- range $a.slo.burnRates }}
  - alert: AgentRunJobMissingBudgetBurn
    expr: |-
      namespace:agentrun_job_missing:ratio_rate{{ .long }} > ({{ .factor }} * (1 - {{ $a.slo.objective }}))
      and on ({{ $c }}, namespace)
      namespace:agentrun_job_missing:ratio_rate{{ .short }} > ({{ .factor }} * (1 - {{ $a.slo.objective }}))
    for: {{ .for }}
    labels:
      long: {{ .long }}
      severity: {{ .severity }}
      short: {{ .short }}{{ $extra }}
    annotations:
      summary: AgentRuns end in JobMissing or WorkflowJobMissing fast enough to exhaust the error budget.
      description: '{{`{{ $value | humanizePercentage }} of the runs that finished in namespace {{ $labels.namespace }}`}} over the last {{ .long }} ended in JobMissing or WorkflowJobMissing (objective {{ $a.slo.objective }}, burn rate above {{ .factor }}).'
      runbook_url: {{ $rb }}#agentrunjobmissingbudgetburn
  {{- end }}
- name: agentrun-lifecycle-exporter
  rules:
  - alert: AgentRunExporterAbsent
    expr: |-
      absent(agentrun_exporter_build_info{{ with $a.absentSelector }}{{ "{" }}{{ . }}{{ "}" }}{{ end }})
    for: {{ $f.exporterAbsent }}
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: The AgentRun lifecycle exporter has disappeared from Prometheus.
      description: '{{`agentrun_exporter_build_info is absent{{ with $labels.`}}{{ $c }}{{` }} in {{ . }}{{ end }}`}} (for {{ $f.exporterAbsent }}); AgentRun Job lifecycle alerts cannot fire.'
      runbook_url: {{ $rb }}#agentrunexporterabsent
  - alert: AgentRunExporterWatchErrors
    expr: |-
      sum by ({{ $c }}, resource) (rate(agentrun_exporter_watch_errors_total[{{ $w.watchErrors }}]))
      /
      (
        sum by ({{ $c }}, resource) (rate(agentrun_exporter_watch_errors_total[{{ $w.watchErrors }}]))
        +
        (
          sum by ({{ $c }}, resource) (rate(agentrun_exporter_watch_events_total[{{ $w.watchErrors }}]))
          or
          sum by ({{ $c }}, resource) (rate(agentrun_exporter_watch_errors_total[{{ $w.watchErrors }}])) * 0
        )
      )
      > {{ $t.watchErrorRatio }}
    for: {{ $f.watchErrors }}
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: The AgentRun lifecycle exporter fails to list or watch Kubernetes objects.
      description: '{{`{{ $value | humanizePercentage }} of the list/watch calls on {{ $labels.resource }} failed`}} (threshold {{ $t.watchErrorRatio }}, window {{ $w.watchErrors }}).'
      runbook_url: {{ $rb }}#agentrunexporterwatcherrors
  - alert: AgentRunExporterSpansDropped
    expr: |-
      sum by ({{ $c }}, reason) (increase(agentrun_exporter_spans_dropped_total[{{ $w.events }}])) > 0
    for: 0m
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: The AgentRun lifecycle exporter dropped spans.
      description: '{{`{{ printf "%.0f" $value }} span(s) were lost, reason {{ $labels.reason }}`}} (last {{ $w.events }}): the OTLP backend was unreachable for longer than the span buffer holds (evicted, expired), shutdown ran out of time, the backend rejected them, or the queue was full.'
      runbook_url: {{ $rb }}#agentrunexporterspansdropped
  - alert: AgentRunExporterMetricOverflow
    expr: |-
      max by ({{ $c }}, metric) (agentrun_exporter_metric_overflow) > 0
    for: 0m
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: A metric of the AgentRun lifecycle exporter has more series than its cardinality limit.
      description: '{{`{{ $labels.metric }} has more series than the cardinality limit of the exporter: new namespaces are merged into one otel_metric_overflow series and their alerts cannot fire`}}; raise --max-namespaces (AGENTRUN_EXPORTER_MAX_NAMESPACES).'
      runbook_url: {{ $rb }}#agentrunexportermetricoverflow
  - alert: AgentRunExporterNoLeader
    expr: |-
      max by ({{ $c }}) (agentrun_exporter_leader) == 0
    for: 10m
    labels:
      severity: warning{{ $extra }}
    annotations:
      summary: No AgentRun lifecycle exporter leads, so none exports spans or counts.
      description: '{{`Every exporter{{ with $labels.`}}{{ $c }}{{` }} in {{ . }}{{ end }}`}} is a standby: the controller''s Lease is held by no pod with a sidecar, released and not taken, or unreadable by the sidecars. Nothing is exported or counted until one leads (a standby holds what it sees, up to 200,000 facts).'
      runbook_url: {{ $rb }}#agentrunexporternoleader
{{- end -}}
