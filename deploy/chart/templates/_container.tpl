{{/*
=== Public: the sidecar container, for a parent chart that lists this chart as a dependency ===

Renders one item of a `containers:` list (it starts with "- name:"), or nothing unless .values.enabled is true.
Usage, inside the parent's Deployment template, after its own container (see deploy/agents-chart-integration.md):

  {{- include "agentrun-lifecycle-exporter.container" (dict "root" $ "values" $.Values.controllers.lifecycleExporter
        "namespaces" $.Values.controller.namespaces
        "jobTtlSeconds" $.Values.controller.jobTtlSecondsAfterFinished
        "agentRunRetentionSeconds" $.Values.controller.agentRunRetentionSeconds) | nindent 8 }}

Args (dict):
  root                      the parent's top-level context ($)
  values                    the parent's block: `enabled` plus any key of this chart's `exporter` values; keys it
                            leaves out take this chart's values (parent key `agentrun-lifecycle-exporter.exporter`)
  namespaces                optional, list or comma string: watched when values.namespaces is empty
  jobTtlSeconds             optional: exported as AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS unless
                            values.jobTtlSecondsAfterFinished is set
  agentRunRetentionSeconds  optional: AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS, likewise
  chart                     optional: the dependency's name or alias (default agentrun-lifecycle-exporter)
*/}}
{{- define "agentrun-lifecycle-exporter.container" -}}
{{- $values := .values | default dict -}}
{{- if $values.enabled -}}
{{- $name := .chart | default "agentrun-lifecycle-exporter" -}}
{{- $sub := index (.root.Subcharts | default dict) $name -}}
{{- if not $sub -}}
{{- fail (printf "agentrun-lifecycle-exporter.container: %q is not a dependency of chart %q (add it under dependencies in Chart.yaml, or pass \"chart\" with its alias)" $name .root.Chart.Name) -}}
{{- end -}}
{{- $cfg := deepCopy $sub.Values.exporter -}}
{{- include "agentrun-lifecycle-exporter.mergeInto" (dict "dst" $cfg "src" (omit $values "enabled")) -}}
{{- include "agentrun-lifecycle-exporter.containerSpec" (dict "cfg" $cfg "root" .root "appVersion" $sub.Chart.AppVersion "namespaces" .namespaces "jobTtlSeconds" .jobTtlSeconds "agentRunRetentionSeconds" .agentRunRetentionSeconds) -}}
{{- end -}}
{{- end -}}

{{/*
=== Internal: the container from a resolved config (the `exporter` values shape) ===
Args: cfg, root, appVersion, and the optional namespaces, jobTtlSeconds, agentRunRetentionSeconds.
*/}}
{{- define "agentrun-lifecycle-exporter.containerSpec" -}}
{{- $c := .cfg -}}
{{- $ns := include "agentrun-lifecycle-exporter.namespaces" (dict "namespaces" $c.namespaces "fallback" .namespaces "root" .root) | fromJsonArray -}}
{{- $image := printf "%s:%s" $c.image.repository (toString (default .appVersion $c.image.tag)) -}}
{{- if $c.image.digest -}}
{{- $image = printf "%s@%s" $c.image.repository $c.image.digest -}}
{{- end -}}
{{- $jobTtl := $c.jobTtlSecondsAfterFinished -}}
{{- if kindIs "invalid" $jobTtl -}}{{- $jobTtl = .jobTtlSeconds -}}{{- end -}}
{{- $retention := $c.agentRunRetentionSeconds -}}
{{- if kindIs "invalid" $retention -}}{{- $retention = .agentRunRetentionSeconds -}}{{- end -}}
{{- $attrs := list "service.instance.id=$(POD_NAME)" "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" -}}
{{- range $k, $v := $c.otel.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) -}}
{{- end -}}
- name: {{ $c.containerName }}
  image: {{ $image | quote }}
  imagePullPolicy: {{ $c.image.pullPolicy }}
  args:
    - watch
    - --namespaces
    - {{ join "," $ns | quote }}
    {{- with $c.jobSelector }}
    - --job-selector
    - {{ . | quote }}
    {{- end }}
    - --metrics-addr
    - {{ printf "0.0.0.0:%d" (int64 $c.metrics.port) | quote }}
    {{- range $c.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: OTEL_SERVICE_NAME
      value: {{ $c.otel.serviceName | quote }}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: {{ join "," $attrs | quote }}
    - name: OTEL_METRICS_EXPORTER
      value: {{ $c.otel.metricsExporter | default "prometheus" | quote }}
    {{- with $c.otel.endpoint }}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ . | quote }}
    - name: OTEL_EXPORTER_OTLP_PROTOCOL
      value: {{ $c.otel.protocol | quote }}
    {{- end }}
    {{- if and $c.otel.headersSecret.name $c.otel.headersSecret.key }}
    - name: OTEL_EXPORTER_OTLP_HEADERS
      valueFrom:
        secretKeyRef:
          name: {{ $c.otel.headersSecret.name | quote }}
          key: {{ $c.otel.headersSecret.key | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" $jobTtl) }}
    - name: AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS
      value: {{ int64 $jobTtl | toString | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" $retention) }}
    - name: AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS
      value: {{ int64 $retention | toString | quote }}
    {{- end }}
    {{- with $c.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: {{ $c.metrics.portName }}
      containerPort: {{ int64 $c.metrics.port }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: {{ $c.metrics.portName }}
    {{- with $c.livenessProbe }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $c.metrics.portName }}
    {{- with $c.readinessProbe }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml $c.resources | nindent 4 }}
  securityContext:
    {{- toYaml $c.securityContext | nindent 4 }}
{{- end -}}
