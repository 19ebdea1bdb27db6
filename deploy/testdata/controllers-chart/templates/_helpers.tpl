{{- define "agents.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agents.serviceAccountName" -}}
{{- default (printf "%s-sa" (include "agents.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}
