{{/*
Names and labels. These helpers take the chart's own context (.), never a parent's.
*/}}
{{- define "agentrun-lifecycle-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "agentrun-lifecycle-exporter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "agentrun-lifecycle-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agentrun-lifecycle-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "agentrun-lifecycle-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agentrun-lifecycle-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: lifecycle-exporter
{{- end -}}

{{/*
The namespace of every namespaced object of this chart: namespaceOverride, else the release namespace (as
charts/agents does with its own namespaceOverride).
*/}}
{{- define "agentrun-lifecycle-exporter.namespace" -}}
{{- .Values.namespaceOverride | default .Release.Namespace -}}
{{- end -}}

{{- define "agentrun-lifecycle-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "agentrun-lifecycle-exporter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Pods that carry the metrics port: the standalone pods and, in sidecar mode, the parent's pods (same release).
*/}}
{{- define "agentrun-lifecycle-exporter.scrapeSelector" -}}
{{- if .selector -}}
{{- toYaml .selector -}}
{{- else -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}
{{- end -}}

{{/*
The namespaces the exporter watches, as a list: the configured ones, else the fallback (what a parent passes),
else "default" (when given), else the release namespace. Accepts a list or a comma-separated string. Output: JSON
list.
Args: dict "namespaces" <list|string> "fallback" <list|string|nil> "default" <string|nil> "root" <context>
*/}}
{{- define "agentrun-lifecycle-exporter.namespaces" -}}
{{- $ns := .namespaces -}}
{{- if not $ns -}}{{- $ns = .fallback -}}{{- end -}}
{{- if kindIs "string" $ns -}}{{- $ns = splitList "," $ns -}}{{- end -}}
{{- $out := list -}}
{{- range $ns -}}{{- if trim . -}}{{- $out = append $out (trim .) -}}{{- end -}}{{- end -}}
{{- if not $out -}}{{- $out = list (.default | default .root.Release.Namespace) -}}{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Deep merge of .src into .dst, in place. Unlike mergeOverwrite, false, 0 and "" in .src win; null in .src keeps
.dst. Lists are replaced, not merged.
*/}}
{{- define "agentrun-lifecycle-exporter.mergeInto" -}}
{{- $dst := .dst -}}
{{- range $k, $v := .src -}}
{{- $cur := index $dst $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $cur) -}}
{{- include "agentrun-lifecycle-exporter.mergeInto" (dict "dst" $cur "src" $v) -}}
{{- else if not (kindIs "invalid" $v) -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}
