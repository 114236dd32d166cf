{{/* Names and labels shared by every template. */}}

{{/* The chart name as it appears in names and labels (nameOverride). */}}
{{- define "vocelio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: fullnameOverride, else release-name (the release name alone when it
already contains the name). 50 characters leave room for the longest suffix within the 63 of a label. */}}
{{- define "vocelio.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "vocelio.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vocelio.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "vocelio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vocelio-gateway
{{- end -}}

{{/* Selector labels: stable for the life of a release (Deployment selectors are immutable). */}}
{{- define "vocelio.selector" -}}
app.kubernetes.io/name: {{ include "vocelio.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's image: per-component values win over the shared `image` block.
Repository defaults to <image.repository>/gateway-<component>; tag to image.tag, then the
chart's appVersion; a digest pins the image (tag@digest keeps the tag readable). */}}
{{- define "vocelio.image" -}}
{{- $shared := .root.Values.image -}}
{{- $own := (index .root.Values .component).image | default dict -}}
{{- $repo := $own.repository | default (printf "%s/gateway-%s" $shared.repository .component) -}}
{{- $tag := $own.tag | default $shared.tag | default .root.Chart.AppVersion -}}
{{- if $own.digest -}}
{{- printf "%s:%s@%s" $repo $tag $own.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "vocelio.pullPolicy" -}}
{{- $own := (index .root.Values .component).image | default dict -}}
{{- $own.pullPolicy | default .root.Values.image.pullPolicy -}}
{{- end -}}

{{/* imagePullSecrets from `imagePullSecrets` (names or {name: ...}) and the older image.pullSecrets. */}}
{{- define "vocelio.imagePullSecrets" -}}
{{- $names := list -}}
{{- range (concat (.Values.imagePullSecrets | default list) (.Values.image.pullSecrets | default list)) -}}
{{- if kindIs "map" . -}}
{{- $names = append $names .name -}}
{{- else -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- with ($names | uniq) }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name of a component: its own when created, else the named one, else "default". */}}
{{- define "vocelio.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- $sa.name | default (printf "%s-%s" (include "vocelio.fullname" .root) .component) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "vocelio.configName" -}}{{ include "vocelio.fullname" . }}-config{{- end -}}
{{- define "vocelio.keysName" -}}{{ include "vocelio.fullname" . }}-api-keys{{- end -}}

{{/* Pod and container security contexts: the hardened defaults, with the component's overrides merged
over them (an override wins key by key). */}}
{{- define "vocelio.podSecurity" -}}
{{- $defaults := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 "fsGroup" 10001 "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- $own := (index .root.Values .component).podSecurityContext | default dict -}}
{{- toYaml (mergeOverwrite $defaults (deepCopy $own)) -}}
{{- end -}}

{{- define "vocelio.containerSecurity" -}}
{{- $defaults := dict "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "runAsNonRoot" true "capabilities" (dict "drop" (list "ALL")) -}}
{{- $own := (index .root.Values .component).securityContext | default dict -}}
{{- toYaml (mergeOverwrite $defaults (deepCopy $own)) -}}
{{- end -}}

{{/* Scheduling and pod extras shared by both components' pod specs (nodeSelector, tolerations,
affinity, priorityClassName). */}}
{{- define "vocelio.scheduling" -}}
{{- $c := index .root.Values .component -}}
{{- with $c.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $c.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod template labels: the selector, the version and the component's podLabels (which never
override the selector). helm.sh/chart stays off pods so a chart-only change does not roll them. */}}
{{- define "vocelio.podLabels" -}}
{{- $c := index .root.Values .component -}}
{{- $fixed := include "vocelio.selector" . | fromYaml -}}
{{- $_ := set $fixed "app.kubernetes.io/version" (.root.Chart.AppVersion | toString) -}}
{{- $_ := set $fixed "app.kubernetes.io/part-of" "vocelio-gateway" -}}
{{- toYaml (merge $fixed ($c.podLabels | default dict)) -}}
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

{{/* checkov findings that are decisions, each with its reason, as checkov.io/skipN annotations on the
workload. Each skip is emitted only while its reason holds (set a digest and CKV_K8S_43 is checked again).
Called with (dict "root" . "component" "operator"|"proxy"). */}}
{{- define "vocelio.checkovSkips" -}}
{{- $root := .root -}}
{{- $c := index $root.Values .component -}}
{{- $skips := list -}}
{{- if not (($c.resources).limits).cpu -}}
{{- $skips = append $skips "CKV_K8S_11=No CPU limit on purpose: one event-loop process per pod, where CFS throttling becomes tail latency; the CPU request guarantees the share (set resources.limits.cpu if policy demands one)" -}}
{{- end -}}
{{- if not ($c.image).digest -}}
{{- $skips = append $skips (printf "CKV_K8S_43=Pinned by an immutable release tag; set %s.image.digest to pin by digest" .component) -}}
{{- end -}}
{{- if ne (include "vocelio.pullPolicy" .) "Always" -}}
{{- $skips = append $skips "CKV_K8S_15=Release tags are immutable and a pod restart must not depend on the registry; set image.pullPolicy to Always if policy demands it" -}}
{{- end -}}
{{- if eq .component "operator" -}}
{{- $skips = append $skips "CKV_K8S_38=The operator watches and writes through the API server, so it mounts its token" -}}
{{- else if eq $root.Values.proxy.configSource "api" -}}
{{- $skips = append $skips "CKV_K8S_38=With proxy.configSource api the proxy watches its config through the API server, so it mounts its token" -}}
{{- end -}}
{{- if and (eq .component "proxy") $root.Values.redis.existingSecret -}}
{{- $skips = append $skips "CKV_K8S_35=The proxy's settings are environment-driven: the Redis URL comes from the Secret as VOCELIO_REDIS_URL and is never logged" -}}
{{- end -}}
{{- if not $root.Values.networkPolicy.enabled -}}
{{- $skips = append $skips "CKV2_K8S_6=NetworkPolicies are opt-in (networkPolicy.enabled): they need a CNI that enforces them and the namespaces of your load balancers and scrapers" -}}
{{- end -}}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end -}}
{{- end -}}


{{- /* The proxy container's resources: `proxy.resources` as they are for one worker; with
proxy.workers > 1 each quantity (requests and limits, cpu and memory) is per worker and the
container gets workers x it (docs/operations/workers.md). */ -}}
{{- define "vocelio.proxyResources" -}}
{{- $c := .Values.proxy -}}
{{- $n := int ($c.workers | default 1) -}}
{{- if le $n 1 -}}
{{- toYaml $c.resources -}}
{{- else -}}
{{- $out := dict -}}
{{- range $kind, $quantities := $c.resources -}}
{{- $scaled := dict -}}
{{- range $name, $q := $quantities -}}
{{- $s := toString $q -}}
{{- if regexMatch "^[0-9]+(\\.[0-9]+)?$" $s -}}
{{- $_ := set $scaled $name (printf "%dm" (mul (mulf (float64 $s) 1000 | int) $n)) -}}
{{- else if regexMatch "^[0-9]+(m|k|M|G|T|Ki|Mi|Gi|Ti)$" $s -}}
{{- $number := regexFind "^[0-9]+" $s -}}
{{- $_ := set $scaled $name (printf "%d%s" (mul (int $number) $n) (trimPrefix $number $s)) -}}
{{- else -}}
{{- fail (printf "proxy.resources.%s.%s: %s cannot be multiplied by proxy.workers; write it as a whole number with a unit (250m, 512Mi)" $kind $name $s) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out $kind $scaled -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}
{{- end -}}
