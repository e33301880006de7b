{{/* Names, labels and the pieces every workload shares. */}}

{{- define "consent-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "consent-service.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "consent-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "consent-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: consent-service
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "api"). */}}
{{- define "consent-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "consent-service.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "consent-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "consent-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "consent-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Pod-level security: a fixed non-root uid matching the image's user, and the
runtime's default seccomp filter.
*/}}
{{- define "consent-service.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "consent-service.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The only writable place: /tmp (gunicorn heartbeats, Prometheus files). */}}
{{- define "consent-service.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "consent-service.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "consent-service.databaseEnv" -}}
- name: CONSENT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | quote }}
      key: {{ .Values.database.urlKey | quote }}
{{- end }}

{{/* One of the service's keys from the keys Secret; call with (list $ "ENV_NAME" "secretKey"). */}}
{{- define "consent-service.keyEnv" -}}
{{- $root := index . 0 }}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.keys.existingSecret | quote }}
      key: {{ index . 2 | quote }}
{{- end }}

{{- define "consent-service.kafkaSecretEnv" -}}
{{- if .Values.kafka.sasl.mechanism }}
- name: CONSENT_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret | quote }}
      key: {{ .Values.kafka.sasl.usernameKey | quote }}
- name: CONSENT_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret | quote }}
      key: {{ .Values.kafka.sasl.passwordKey | quote }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: CONSENT_KAFKA_SSL_CAFILE
  value: {{ printf "/etc/consent-service/kafka-ca/%s" .Values.kafka.tls.caKey | quote }}
{{- end }}
{{- end }}

{{/* Settings no values combination may break; checked once, by the ConfigMap. */}}
{{- define "consent-service.validate" -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.existingSecret) }}
{{- fail "kafka.sasl.existingSecret: required when kafka.sasl.mechanism is set (the Secret holding the SASL username and password)" }}
{{- end }}
{{- if and .Values.kafka.sasl.mechanism (not (hasPrefix "SASL_" .Values.kafka.securityProtocol)) }}
{{- fail "kafka.securityProtocol: must be SASL_SSL or SASL_PLAINTEXT when kafka.sasl.mechanism is set" }}
{{- end }}
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) (not .Values.kafka.sasl.mechanism) }}
{{- fail "kafka.sasl.mechanism: required when kafka.securityProtocol is SASL_*" }}
{{- end }}
{{- if and (not .Values.relay.enabled) (not .Values.expiry.cronJob.enabled) }}
{{- fail "expiry.cronJob.enabled: must be true when relay.enabled is false, or consents never expire" }}
{{- end }}
{{- if and (not .Values.relay.enabled) .Values.kafka.bootstrapServers }}
{{- fail "relay.enabled: must be true when kafka.bootstrapServers is set, or no event reaches Kafka" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas: must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.tls) }}
{{- fail "ingress.tls: required when the ingress is enabled (health data never travels in clear text)" }}
{{- end }}
{{- end }}

{{/* Egress every workload needs: cluster DNS and PostgreSQL. */}}
{{- define "consent-service.egressDnsAndDatabase" -}}
- to:
    - namespaceSelector:
        {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 8 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
- ports:
    {{- range .Values.networkPolicy.postgresql.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with .Values.networkPolicy.postgresql.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
