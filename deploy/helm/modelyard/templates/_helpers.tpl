{{- define "modelyard.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelyard.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelyard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "modelyard.teams" -}}
{{- if .Values.teamNamespaces -}}
{{- toYaml .Values.teamNamespaces -}}
{{- else -}}
default: {{ .Release.Namespace }}
{{- end -}}
{{- end -}}

{{- define "modelyard.apiUrl" -}}
http://{{ include "modelyard.fullname" . }}-api.{{ .Release.Namespace }}.svc:{{ .Values.controlPlane.port }}
{{- end -}}
