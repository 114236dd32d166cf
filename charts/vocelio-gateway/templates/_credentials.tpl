{{- /*
Credentials come from existing Secrets only (docs/multi-tenancy.md): the proxy reads JWT HMAC secrets from
files mounted from Secrets and the Redis password from a secretKeyRef env. Values that would put a credential
into rendered output (a ConfigMap, a Deployment's env) fail the render with a message naming the fix.
*/ -}}

{{- /* The proxy settings' issuers: values as given, plus `secret_file` for each issuer with a Secret. */ -}}
{{- define "vocelio.issuers" -}}
{{- $out := list -}}
{{- $known := list -}}
{{- range $issuer := .Values.proxy.auth.issuers -}}
{{- if hasKey $issuer "secret" -}}
{{- fail (printf "proxy.auth.issuers: issuer %v has a plain `secret`, which would be rendered into a ConfigMap: put the HMAC secret in a Secret and name it in credentials.jwtIssuerSecrets" $issuer.issuer) -}}
{{- end -}}
{{- if hasKey $issuer "secret_file" -}}
{{- fail (printf "proxy.auth.issuers: issuer %v sets secret_file: name its Secret in credentials.jwtIssuerSecrets instead" $issuer.issuer) -}}
{{- end -}}
{{- $copy := deepCopy $issuer -}}
{{- range $i, $ref := $.Values.credentials.jwtIssuerSecrets -}}
{{- if eq $ref.issuer $issuer.issuer -}}
{{- $_ := set $copy "secret_file" (printf "/etc/vocelio/credentials/jwt-%d/hmac" $i) -}}
{{- end -}}
{{- end -}}
{{- $known = append $known $issuer.issuer -}}
{{- $out = append $out $copy -}}
{{- end -}}
{{- range $ref := .Values.credentials.jwtIssuerSecrets -}}
{{- if not (has $ref.issuer $known) -}}
{{- fail (printf "credentials.jwtIssuerSecrets: issuer %v is not in proxy.auth.issuers" $ref.issuer) -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{- define "vocelio.credentialMounts" -}}
{{- range $i, $ref := .Values.credentials.jwtIssuerSecrets }}
- {name: jwt-{{ $i }}, mountPath: /etc/vocelio/credentials/jwt-{{ $i }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "vocelio.credentialVolumes" -}}
{{- range $i, $ref := .Values.credentials.jwtIssuerSecrets }}
- name: jwt-{{ $i }}
  secret:
    secretName: {{ $ref.secretName }}
    items: [{key: {{ $ref.secretKey | quote }}, path: hmac}]
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- /* The Redis password env, from an existing Secret; a URL with credentials in values is refused. */ -}}
{{- define "vocelio.redisPasswordEnv" -}}
{{- if regexMatch "^rediss?://[^/]*@" .Values.redis.url }}
{{- fail "redis.url carries credentials, which would be rendered into the Deployment: put the URL in a Secret (redis.existingSecret) or the password in credentials.redisPassword" }}
{{- end }}
{{- if .Values.credentials.redisPassword.secretName }}
- name: VOCELIO_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .Values.credentials.redisPassword.secretName }}, key: {{ .Values.credentials.redisPassword.secretKey | quote }}}
{{- end }}
{{- end -}}
