{{/*
=== Public: the sidecar container, for a parent chart that lists this chart as a dependency ===

Renders one item of a `containers:` list (it starts with "- name:"), or nothing. Usage in charts/agents, inside
each Deployment template, after the controller container (deploy/agents-chart-integration.md):

  {{- include "agentrun-lifecycle-exporter.container" (dict "root" $ "values" $.Values.controllers.lifecycleExporter
        "controllerContainer" (include "agents.controllersName" $) "requireDigest" $.Values.imagePolicy.requireDigest) | nindent 8 }}

Args (dict):
  root                 the parent's top-level context ($)
  values               the parent's block: `enabled` plus any key of this chart's `exporter` values; keys it leaves
                       out take this chart's values (parent key `agentrun-lifecycle-exporter.exporter`)
  controllerContainer  the name of the agents controller container in the same Deployment. The include renders that
                       Deployment template once more (without the sidecar), reads the controller container's env, and:
                       - renders nothing unless AGENTS_CONTROLLER_ENABLED is "1"/"true" there (the AgentRun
                         controller runs in this Deployment);
                       - copies AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS, AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS and
                         AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS entry for entry (the last entry of
                         each name, as the kubelet does; absent stays absent, `valueFrom` as written, a literal
                         `value` as the controller's Number.parseInt reads it: "2.592e+06" → "2");
                       - watches AGENTS_CONTROLLER_NAMESPACES unless values.namespaces is set;
                       - copies the controller's leader election (AGENTS_LEADER_ELECTION_ENABLED, _LEASE_NAME,
                         _LEASE_NAMESPACE, AGENTS_POD_NAMESPACE, AGENTS_POD_UID), so the sidecar exports only while
                         its pod's controller holds the Lease, and checks that the dependency's Role grants reading
                         that Lease (rbac.leaderLease);
                       - checks that this chart's namespaced objects (PodMonitor, Service, PrometheusRule, dashboards,
                         RoleBinding subjects) are in the Deployment's namespace (its `namespaceOverride`).
                       So the sidecar sees what the controller sees, whatever expression or override produced it.
  requireDigest        optional: when true, the sidecar image must be pinned by a sha256 digest (charts/agents:
                       imagePolicy.requireDigest)
  chart                optional: the dependency's name or alias (default agentrun-lifecycle-exporter)
For other parents (no controllerContainer):
  namespaces                optional, list or comma string: watched when values.namespaces is empty
  jobTtlSeconds             optional: AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS unless values.jobTtlSecondsAfterFinished is set
  agentRunRetentionSeconds  optional: AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS, likewise
*/}}
{{- define "agentrun-lifecycle-exporter.container" -}}
{{- $values := .values | default dict -}}
{{- /* While the include renders the parent's Deployment to read the controller container, it renders nothing. */ -}}
{{- if and $values.enabled (not (index .root "agentrunLifecycleExporterProbe")) -}}
{{- $name := .chart | default "agentrun-lifecycle-exporter" -}}
{{- $sub := index (.root.Subcharts | default dict) $name -}}
{{- if not $sub -}}
{{- fail (printf "agentrun-lifecycle-exporter.container: %q is not a dependency of chart %q (vendor it into charts/%s/, or pass \"chart\" with its alias; see deploy/agents-chart-integration.md)" $name .root.Chart.Name $name) -}}
{{- end -}}
{{- $cfg := deepCopy $sub.Values.exporter -}}
{{- include "agentrun-lifecycle-exporter.mergeInto" (dict "dst" $cfg "src" (omit $values "enabled")) -}}
{{- $m := dict "enabled" true -}}
{{- if .controllerContainer -}}
{{- $m = include "agentrun-lifecycle-exporter.controllerEnv" (dict "root" .root "container" .controllerContainer) | fromJson -}}
{{- end -}}
{{- if $m.enabled -}}
{{- $image := $cfg.image | default dict -}}
{{- if and .requireDigest (not (regexMatch "^sha256:[a-fA-F0-9]{64}$" (toString ($image.digest | default "")))) -}}
{{- fail "imagePolicy.requireDigest=true requires controllers.lifecycleExporter.image.digest (or agentrun-lifecycle-exporter.exporter.image.digest) to be a sha256 digest when controllers.lifecycleExporter.enabled=true." -}}
{{- end -}}
{{- if .controllerContainer -}}
{{- range $k := list "jobTtlSecondsAfterFinished" "agentRunRetentionSeconds" "agentRunRetentionZeroTtlMaxSeconds" -}}
{{- if not (kindIs "invalid" (index $cfg $k)) -}}
{{- fail (printf "controllers.lifecycleExporter.%s (or agentrun-lifecycle-exporter.exporter.%s) is set: the sidecar copies the controller container's own variable; set the controller's value (controller.jobTtlSecondsAfterFinished, controller.jobTtlSeconds, controller.agentRunRetentionSeconds, controller.agentRunRetentionZeroTtlMaxSeconds) and leave this null" $k $k) -}}
{{- end -}}
{{- end -}}
{{- range $e := $cfg.extraEnv | default list -}}
{{- if has $e.name $m.mirrored -}}
{{- fail (printf "controllers.lifecycleExporter.extraEnv sets %s: the sidecar copies the controller container's own %s" $e.name $e.name) -}}
{{- end -}}
{{- end -}}
{{- $watched := include "agentrun-lifecycle-exporter.namespaces" (dict "namespaces" $cfg.namespaces "fallback" $m.namespaces "default" $m.namespace "root" .root) | fromJsonArray -}}
{{- include "agentrun-lifecycle-exporter.checkDependencyNamespace" (dict "sub" $sub "root" .root "namespace" $m.namespace "cfg" $cfg "name" $name "watched" $watched) -}}
{{- if and $sub.Values.rbac.create $sub.Values.rbac.serviceAccountName -}}
{{- $granted := dict "name" $sub.Values.rbac.leaderLease.name "namespace" ($sub.Values.rbac.leaderLease.namespace | default $m.namespace) -}}
{{- if or (ne $granted.name $m.lease.name) (ne $granted.namespace $m.lease.namespace) -}}
{{- fail (printf "the controller elects its leader on Lease %s/%s, but %s.rbac.leaderLease grants reading %s/%s: set %s.rbac.leaderLease to name: %s, namespace: %s" $m.lease.namespace $m.lease.name $name $granted.namespace $granted.name $name $m.lease.name $m.lease.namespace) -}}
{{- end -}}
{{- end -}}
{{- include "agentrun-lifecycle-exporter.containerSpec" (dict "cfg" $cfg "root" .root "appVersion" $sub.Chart.AppVersion "namespaces" $m.namespaces "defaultNamespace" $m.namespace "env" $m.env) -}}
{{- else -}}
{{- include "agentrun-lifecycle-exporter.containerSpec" (dict "cfg" $cfg "root" .root "appVersion" $sub.Chart.AppVersion "namespaces" .namespaces "jobTtlSeconds" .jobTtlSeconds "agentRunRetentionSeconds" .agentRunRetentionSeconds) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
=== Internal: the controller container's env, read from the rendered parent Deployment ===
Renders the template that is being rendered (.root.Template.Name) once more with a marker in the context, so that
the sidecar include inside it renders nothing, and reads the container named .container.
Output (JSON): enabled (AGENTS_CONTROLLER_ENABLED is 1/true), namespace (the Deployment's), namespaces (the value of
AGENTS_CONTROLLER_NAMESPACES, when a literal), env (the copied entries, in order), mirrored (their names), lease (the
name and namespace of the controller's leader-election Lease).
*/}}
{{- define "agentrun-lifecycle-exporter.controllerEnv" -}}
{{- $probe := merge (dict "agentrunLifecycleExporterProbe" true) .root -}}
{{- $where := .root.Template.Name -}}
{{- $doc := include $where $probe | fromYaml -}}
{{- if hasKey $doc "Error" -}}
{{- fail (printf "agentrun-lifecycle-exporter.container: cannot read %s as one YAML document: %s" $where $doc.Error) -}}
{{- end -}}
{{- $ctr := dict -}}
{{- $names := list -}}
{{- range $c := dig "spec" "template" "spec" "containers" (list) $doc -}}
{{- $names = append $names $c.name -}}
{{- if eq $c.name $.container -}}{{- $ctr = $c -}}{{- end -}}
{{- end -}}
{{- if not $ctr -}}
{{- fail (printf "agentrun-lifecycle-exporter.container: controllerContainer %q is not a container of %s (containers: %s)" .container $where (join ", " $names)) -}}
{{- end -}}
{{- $last := dict -}}
{{- range $e := $ctr.env | default list -}}{{- $_ := set $last $e.name $e -}}{{- end -}}
{{- $enabled := index $last "AGENTS_CONTROLLER_ENABLED" -}}
{{- if not $enabled -}}
{{- fail (printf "agentrun-lifecycle-exporter.container: container %q of %s sets no AGENTS_CONTROLLER_ENABLED; controllerContainer must name the agents controller container" .container $where) -}}
{{- end -}}
{{- $on := or (hasKey $enabled "valueFrom") (has (lower (trim (toString ($enabled.value | default "")))) (list "1" "true")) -}}
{{- $mirrored := list "AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS" "AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS" "AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS" -}}
{{- $env := list -}}
{{- range $n := $mirrored -}}
{{- with index $last $n -}}
{{- $e := . -}}
{{- /* The controller reads these with Number.parseInt: its leading integer. Helm renders a values.yaml integer of
7 digits or more as 2.592e+06, which the controller reads as 2; the exporter gets that same number. */ -}}
{{- if and (hasKey $e "value") (regexMatch "^[[:space:]]*[+]?[0-9]+" (toString ($e.value | default ""))) -}}
{{- $e = dict "name" $n "value" (regexFind "[0-9]+" (toString $e.value)) -}}
{{- end -}}
{{- $env = append $env $e -}}
{{- end -}}
{{- end -}}
{{- /* The controller's leader election, so the sidecar follows the Lease its own pod's controller holds. */ -}}
{{- $election := list "AGENTS_LEADER_ELECTION_ENABLED" "AGENTS_LEADER_ELECTION_LEASE_NAME" "AGENTS_LEADER_ELECTION_LEASE_NAMESPACE" "AGENTS_POD_NAMESPACE" "AGENTS_POD_UID" -}}
{{- range $n := $election -}}
{{- with index $last $n -}}{{- $env = append $env . -}}{{- end -}}
{{- end -}}
{{- $mirrored = concat $mirrored $election -}}
{{- $lease := dict "name" "agents-controller-leader" "namespace" (dig "metadata" "namespace" "" $doc) -}}
{{- with index $last "AGENTS_LEADER_ELECTION_LEASE_NAME" -}}{{- $_ := set $lease "name" (trim (toString (.value | default "agents-controller-leader"))) -}}{{- end -}}
{{- with index $last "AGENTS_LEADER_ELECTION_LEASE_NAMESPACE" -}}{{- with .value -}}{{- $_ := set $lease "namespace" (trim (toString .)) -}}{{- end -}}{{- end -}}
{{- $namespaces := "" -}}
{{- with index $last "AGENTS_CONTROLLER_NAMESPACES" -}}
{{- if hasKey . "valueFrom" -}}
{{- $env = append $env (dict "name" "AGENTRUN_EXPORTER_NAMESPACES" "valueFrom" .valueFrom) -}}
{{- else -}}
{{- $namespaces = toString (.value | default "") -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "enabled" $on "namespace" (dig "metadata" "namespace" "" $doc) "namespaces" $namespaces "env" $env "mirrored" (concat $mirrored (list "AGENTRUN_EXPORTER_NAMESPACES")) "lease" $lease) -}}
{{- end -}}

{{/*
=== Internal: this chart's namespaced objects must be where the parent's pods are ===
Fails when the dependency renders an object whose namespace matters (PodMonitor, Service/ServiceMonitor,
PrometheusRule, dashboards without dashboards.namespace, RoleBindings of rbac.serviceAccountName) in another
namespace than the parent's Deployment, or a PodMonitor/Service on another port name than the sidecar's, or
RoleBindings that do not cover the namespaces the sidecar watches.
Args: sub (the dependency's context), root, namespace (the Deployment's), cfg (the sidecar's resolved config), name,
watched (the sidecar's namespaces)
*/}}
{{- define "agentrun-lifecycle-exporter.checkDependencyNamespace" -}}
{{- $v := .sub.Values -}}
{{- $depNs := $v.namespaceOverride | default .root.Release.Namespace -}}
{{- $objects := list -}}
{{- if $v.podMonitor.enabled -}}{{- $objects = append $objects "PodMonitor" -}}{{- end -}}
{{- if $v.service.enabled -}}{{- $objects = append $objects "Service" -}}{{- end -}}
{{- if $v.serviceMonitor.enabled -}}{{- $objects = append $objects "ServiceMonitor" -}}{{- end -}}
{{- if $v.prometheusRule.enabled -}}{{- $objects = append $objects "PrometheusRule" -}}{{- end -}}
{{- if and $v.dashboards.enabled (not $v.dashboards.namespace) -}}{{- $objects = append $objects "dashboard ConfigMaps" -}}{{- end -}}
{{- if and $v.rbac.create $v.rbac.serviceAccountName -}}{{- $objects = append $objects "RoleBinding subjects" -}}{{- end -}}
{{- if and $objects .namespace (ne $depNs .namespace) -}}
{{- fail (printf "the agentrun-lifecycle-exporter dependency renders its %s in namespace %q, but the sidecar's Deployment is in %q: set %s.namespaceOverride: %s (the same as namespaceOverride)" (join ", " $objects) $depNs .namespace .name .namespace) -}}
{{- end -}}
{{- if and $v.rbac.create $v.rbac.serviceAccountName (not $v.rbac.clusterScoped) -}}
{{- $granted := include "agentrun-lifecycle-exporter.namespaces" (dict "namespaces" $v.exporter.namespaces "default" $depNs "root" .root) | fromJsonArray -}}
{{- $missing := list -}}
{{- range $ns := .watched -}}{{- if not (has $ns $granted) -}}{{- $missing = append $missing $ns -}}{{- end -}}{{- end -}}
{{- if $missing -}}
{{- fail (printf "the sidecar watches %s, but %s.rbac.serviceAccountName binds Roles only in %s: set %s.exporter.namespaces to [%s], or %s.rbac.clusterScoped: true" (join "," .watched) .name (join "," $granted) .name (join ", " .watched) .name) -}}
{{- end -}}
{{- end -}}
{{- if and (or $v.podMonitor.enabled $v.service.enabled) (ne (toString $v.exporter.metrics.portName) (toString .cfg.metrics.portName)) -}}
{{- fail (printf "controllers.lifecycleExporter.metrics.portName is %q but the dependency's PodMonitor/Service scrape port %q: set %s.exporter.metrics.portName instead" .cfg.metrics.portName $v.exporter.metrics.portName .name) -}}
{{- end -}}
{{- end -}}

{{/*
=== Internal: the container from a resolved config (the `exporter` values shape) ===
Args: cfg, root, appVersion, and the optional namespaces, defaultNamespace, jobTtlSeconds,
agentRunRetentionSeconds, env (entries copied verbatim from the controller container; then the three TTL and
retention settings come from there only).
*/}}
{{- define "agentrun-lifecycle-exporter.containerSpec" -}}
{{- $c := .cfg -}}
{{- $ns := include "agentrun-lifecycle-exporter.namespaces" (dict "namespaces" $c.namespaces "fallback" .namespaces "default" .defaultNamespace "root" .root) | fromJsonArray -}}
{{- $image := printf "%s:%s" $c.image.repository (toString (default .appVersion $c.image.tag)) -}}
{{- if $c.image.digest -}}
{{- $image = printf "%s@%s" $c.image.repository $c.image.digest -}}
{{- end -}}
{{- $copied := hasKey . "env" -}}
{{- $jobTtl := $c.jobTtlSecondsAfterFinished -}}
{{- if kindIs "invalid" $jobTtl -}}{{- $jobTtl = .jobTtlSeconds -}}{{- end -}}
{{- $retention := $c.agentRunRetentionSeconds -}}
{{- if kindIs "invalid" $retention -}}{{- $retention = .agentRunRetentionSeconds -}}{{- end -}}
{{- $zeroTtlRetention := $c.agentRunRetentionZeroTtlMaxSeconds -}}
{{- $attrs := list "service.instance.id=$(POD_NAME)" "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" -}}
{{- range $k, $v := $c.otel.resourceAttributes -}}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) -}}
{{- end -}}
- name: {{ $c.containerName }}
  image: {{ $image | quote }}
  imagePullPolicy: {{ $c.image.pullPolicy }}
  args:
    - watch
    {{- if not (and $copied (not .namespaces) (not $c.namespaces)) }}
    - --namespaces
    - {{ join "," $ns | quote }}
    {{- end }}
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
    {{- if $copied }}
    {{- range .env }}
    - {{ toYaml . | nindent 6 | trim }}
    {{- end }}
    {{- else }}
    {{- if not (kindIs "invalid" $jobTtl) }}
    - name: AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS
      value: {{ int64 $jobTtl | toString | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" $retention) }}
    - name: AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS
      value: {{ int64 $retention | toString | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" $zeroTtlRetention) }}
    - name: AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS
      value: {{ int64 $zeroTtlRetention | toString | quote }}
    {{- end }}
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
