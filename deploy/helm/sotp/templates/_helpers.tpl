{{- define "sotp.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "sotp.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sotp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The [runtime.flows] shared by every role: tenants by exporter, the bus. */}}
{{- define "sotp.flowsConfig" -}}
{{- if .Values.defaultTenant }}
default_tenant = {{ .Values.defaultTenant | quote }}
{{- end }}
[runtime.flows.exporters]
{{- range $net, $tenant := .Values.exporters }}
{{ $net | quote }} = {{ $tenant | quote }}
{{- end }}
{{- end -}}
