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
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.keys.existingSecret | quote }}
      key: {{ index . 2 | quote }}
{{- end }}

{{/*
The relay's Kafka client settings, in the relay's env only: every process
validates them at start, and a SASL mechanism without its credentials (which
only the relay gets) would stop the API and the jobs.
*/}}
{{- define "consent-service.kafkaClientEnv" -}}
- name: CONSENT_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if .Values.kafka.sasl.mechanism }}
- name: CONSENT_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
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

{{/*
CONSENT_SMTP_URL from the mail Secret: the API needs it to accept `delivery`,
the relay to send. Empty when mail is off.
*/}}
{{- define "consent-service.smtpUrlEnv" -}}
{{- if .Values.mail.existingSecret }}
- name: CONSENT_SMTP_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mail.existingSecret | quote }}
      key: {{ .Values.mail.urlKey | quote }}
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
{{- if and .Values.ingress.enabled (not .Values.config.publicUrl) .Values.ingress.hosts (hasPrefix "*" (first .Values.ingress.hosts).host) }}
{{- fail "config.publicUrl: required when the first ingress host is a wildcard (patient links need a real host)" }}
{{- end }}
{{- if and .Values.mail.existingSecret (not .Values.mail.from) }}
{{- fail "mail.from: required when mail.existingSecret is set (the sender of mail to patients)" }}
{{- end }}
{{- if and .Values.mail.existingSecret (not .Values.relay.enabled) }}
{{- fail "relay.enabled: must be true when mail.existingSecret is set, or no mail is ever sent" }}
{{- end }}
{{- if and .Values.mail.existingSecret (not (include "consent-service.publicUrl" .)) }}
{{- fail "config.publicUrl: required when mail.existingSecret is set (links in mail), unless the ingress gives one" }}
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

{{/*
The public base address of patient links (CONSENT_PUBLIC_URL): config.publicUrl,
else https:// and the first ingress host when the ingress is enabled, else
empty (links then follow the Host header of the API call that creates them).
*/}}
{{- define "consent-service.publicUrl" -}}
{{- if .Values.config.publicUrl }}
{{- .Values.config.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- printf "https://%s" (first .Values.ingress.hosts).host }}
{{- end }}
{{- end }}

{{/*
A CronJob's name: at most 52 characters, because Kubernetes appends an
11-character suffix to name each Job it starts. Call with
(dict "root" $ "suffix" "expire").
*/}}
{{- define "consent-service.cronJobName" -}}
{{- $suffix := printf "-%s" .suffix }}
{{- $prefix := include "consent-service.fullname" .root | trunc (int (sub 52 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $prefix $suffix }}
{{- end }}

{{/*
A CronJob running one consent-service command with the database URL and the
audit keys, no other secret, locked down like every other pod. Call with
(dict "root" $ "component" "expire" "args" (list "expire") "job" .Values.expiry.cronJob
"backoffLimit" 1 "podAnnotations" (dict)); "job" holds schedule,
activeDeadlineSeconds and resources.
*/}}
{{- define "consent-service.cronJob" -}}
{{- $root := .root }}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "consent-service.cronJobName" (dict "root" $root "suffix" .component) }}
  labels:
    {{- include "consent-service.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  schedule: {{ .job.schedule | quote }}
  # A run still going when the next is due: the next one is skipped, since
  # two at once would only wait on each other's locks.
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 120
  successfulJobsHistoryLimit: 1
  # Failed Jobs stay visible to kubectl and to kube-state-metrics alerts.
  failedJobsHistoryLimit: 3
  jobTemplate:
    metadata:
      labels:
        {{- include "consent-service.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
    spec:
      backoffLimit: {{ .backoffLimit }}
      activeDeadlineSeconds: {{ .job.activeDeadlineSeconds }}
      template:
        metadata:
          labels:
            {{- include "consent-service.labels" $root | nindent 12 }}
            app.kubernetes.io/component: {{ .component }}
          {{- with .podAnnotations }}
          annotations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        spec:
          restartPolicy: Never
          serviceAccountName: {{ include "consent-service.serviceAccountName" $root }}
          automountServiceAccountToken: false
          enableServiceLinks: false
          securityContext:
            {{- include "consent-service.podSecurityContext" $root | nindent 12 }}
          {{- with $root.Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          containers:
            - name: {{ .component }}
              image: {{ include "consent-service.image" $root | quote }}
              imagePullPolicy: {{ $root.Values.image.pullPolicy }}
              args: {{ toJson .args }}
              envFrom:
                - configMapRef:
                    name: {{ include "consent-service.fullname" $root }}
              env:
                {{- include "consent-service.databaseEnv" $root | nindent 16 }}
                {{- include "consent-service.keyEnv" (list $root "CONSENT_AUDIT_KEYS" $root.Values.keys.auditKey) | nindent 16 }}
              resources:
                {{- toYaml .job.resources | nindent 16 }}
              securityContext:
                {{- include "consent-service.containerSecurityContext" $root | nindent 16 }}
              volumeMounts:
                {{- include "consent-service.tmpMount" $root | nindent 16 }}
          volumes:
            {{- include "consent-service.tmpVolume" $root | nindent 12 }}
{{- end }}
