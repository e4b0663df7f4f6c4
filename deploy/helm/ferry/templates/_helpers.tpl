{{/* Labels of every object. */}}
{{- define "ferry.labels" -}}
app.kubernetes.io/part-of: ferry
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels of the control plane's objects and pods. */}}
{{- define "ferry.controlLabels" -}}
app: ferry-control
app.kubernetes.io/component: control-plane
app.kubernetes.io/name: ferry-control
{{ include "ferry.labels" . }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "ferry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The injected containers' image. */}}
{{- define "ferry.proxyImage" -}}
{{ .Values.mesh.proxyImage | default (include "ferry.image" .) }}
{{- end }}
