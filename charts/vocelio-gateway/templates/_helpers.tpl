{{/* Names and labels shared by every template. */}}
{{- define "vocelio.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vocelio.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vocelio-gateway
{{- end -}}

{{- define "vocelio.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vocelio.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s/gateway-%s:%s" .root.Values.image.repository .component $tag -}}
{{- end -}}

{{- define "vocelio.configName" -}}{{ include "vocelio.fullname" . }}-config{{- end -}}
{{- define "vocelio.keysName" -}}{{ include "vocelio.fullname" . }}-api-keys{{- end -}}

{{- define "vocelio.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "vocelio.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
{{- end -}}

{{- define "vocelio.redisUrlEnv" -}}
{{- if .Values.redis.existingSecret }}
- name: VOCELIO_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.existingSecret }}, key: {{ .Values.redis.existingSecretKey }}}
{{- else if .Values.redis.url }}
- name: VOCELIO_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- else if .Values.redis.inChart }}
- name: VOCELIO_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "vocelio.fullname" .) | quote }}
{{- end }}
{{- end -}}

{{/* Labels of an alert: its severity, then monitoring.alertLabels (e.g. team: platform). */}}
{{- define "vocelio.alertLabels" -}}
severity: {{ .severity }}
{{- with .root.Values.monitoring.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
