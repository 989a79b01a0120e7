{{/* Names: <release>-<service>. */}}
{{- define "closedloop.name" -}}
{{- printf "%s-%s" .root.Release.Name .service | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "closedloop.labels" -}}
app.kubernetes.io/name: {{ .service }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: closedloop
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "closedloop.selector" -}}
app.kubernetes.io/name: {{ .service }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The consumer group and topics of each consuming service (for autoscaling). */}}
{{- define "closedloop.consumer" -}}
{{- $p := .root.Values.kafka.topicPrefix -}}
{{- if eq .service "normalizer" -}}
group: closedloop-normalizer
topics: [{{ printf "%sfeedback.raw.v1" $p | quote }}]
{{- else if eq .service "enricher" -}}
group: closedloop-enricher
topics: [{{ printf "%sfeedback.normalized.v1" $p | quote }}]
{{- else if eq .service "sink-warehouse" -}}
group: closedloop-sink-warehouse
topics: [{{ printf "%sfeedback.enriched.priority.v1" $p | quote }}, {{ printf "%sfeedback.enriched.v1" $p | quote }}]
{{- end -}}
{{- end -}}

{{/* The Kafka variables of a container: brokers, TLS and SASL (the password
     a file from the passwords Secret). ctx: root, service (the Kafka user's
     suffix). */}}
{{- define "closedloop.kafkaEnv" -}}
{{- $k := .root.Values.kafka -}}
- { name: KAFKA_BROKERS, value: {{ $k.brokers | quote }} }
- { name: CLOSEDLOOP_TOPIC_PREFIX, value: {{ $k.topicPrefix | quote }} }
- { name: KAFKA_TOPIC_PARTITIONS, value: {{ $k.partitions | quote }} }
- { name: KAFKA_TOPIC_REPLICATION, value: {{ $k.replication | quote }} }
{{- if $k.minInsyncReplicas }}
- { name: KAFKA_MIN_INSYNC_REPLICAS, value: {{ $k.minInsyncReplicas | quote }} }
{{- end }}
{{- if $k.tls.enabled }}
- { name: KAFKA_TLS_ENABLED, value: "true" }
{{- if $k.tls.caSecret.name }}
- { name: KAFKA_TLS_CA_FILE, value: /etc/closedloop-kafka/ca/{{ $k.tls.caSecret.key }} }
{{- end }}
{{- if $k.tls.clientCertSecret }}
- { name: KAFKA_TLS_CERT_FILE, value: /etc/closedloop-kafka/client/tls.crt }
- { name: KAFKA_TLS_KEY_FILE, value: /etc/closedloop-kafka/client/tls.key }
{{- end }}
{{- if $k.tls.serverName }}
- { name: KAFKA_TLS_SERVER_NAME, value: {{ $k.tls.serverName | quote }} }
{{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
- { name: KAFKA_SASL_MECHANISM, value: {{ $k.sasl.mechanism | quote }} }
- { name: KAFKA_SASL_USERNAME, value: {{ printf "%s%s" $k.sasl.userPrefix .service | quote }} }
- { name: KAFKA_SASL_PASSWORD, value: "file:/etc/closedloop-kafka/sasl/{{ .service }}" }
{{- end }}
{{- end -}}

{{/* Their volume mounts and volumes (secrets as files). */}}
{{- define "closedloop.kafkaMounts" -}}
{{- $k := .root.Values.kafka -}}
{{- if and $k.tls.enabled $k.tls.caSecret.name }}
- { name: kafka-ca, mountPath: /etc/closedloop-kafka/ca, readOnly: true }
{{- end }}
{{- if and $k.tls.enabled $k.tls.clientCertSecret }}
- { name: kafka-client, mountPath: /etc/closedloop-kafka/client, readOnly: true }
{{- end }}
{{- if $k.sasl.mechanism }}
- { name: kafka-sasl, mountPath: /etc/closedloop-kafka/sasl, readOnly: true }
{{- end }}
{{- end -}}

{{- define "closedloop.kafkaVolumes" -}}
{{- $k := .root.Values.kafka -}}
{{- if and $k.tls.enabled $k.tls.caSecret.name }}
- name: kafka-ca
  secret: { secretName: {{ $k.tls.caSecret.name }}, items: [{ key: {{ $k.tls.caSecret.key }}, path: {{ $k.tls.caSecret.key }} }] }
{{- end }}
{{- if and $k.tls.enabled $k.tls.clientCertSecret }}
- name: kafka-client
  secret: { secretName: {{ $k.tls.clientCertSecret }} }
{{- end }}
{{- if $k.sasl.mechanism }}
- name: kafka-sasl
  secret: { secretName: {{ $k.sasl.passwordsSecret }}, items: [{ key: {{ .service }}, path: {{ .service }} }] }
{{- end }}
{{- end -}}

{{/* A KEDA kafka trigger's authenticationRef when the brokers need TLS or SASL. */}}
{{- define "closedloop.kedaAuthRef" -}}
{{- if or .Values.kafka.tls.enabled .Values.kafka.sasl.mechanism -}}
authenticationRef: { name: {{ printf "%s-kafka" .Release.Name }} }
{{- end -}}
{{- end -}}

{{- define "closedloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (printf "%s-closedloop" .Release.Name) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* The pod spec every workload shares: identity, Pod Security "restricted",
     scheduling (the service's own settings replace the chart's). ctx: root,
     service, cfg (the service's values, or an empty dict). */}}
{{- define "closedloop.podSpec" -}}
{{- $v := .root.Values -}}
{{- $cfg := .cfg | default dict -}}
serviceAccountName: {{ include "closedloop.serviceAccountName" .root }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile: { type: RuntimeDefault }
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($cfg.nodeSelector | default $v.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($cfg.tolerations | default $v.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($cfg.affinity | default $v.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $spread := $cfg.topologySpreadConstraints | default $v.topologySpreadConstraints }}
topologySpreadConstraints:
{{- if $spread }}
  {{- toYaml $spread | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "closedloop.selector" . | nindent 8 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The container security context of Pod Security "restricted". */}}
{{- define "closedloop.containerSecurity" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: { drop: [ALL] }
  seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{/* Whether KEDA owns a service's replicas. */}}
{{- define "closedloop.autoscaled" -}}
{{- if and .root.Values.autoscaling.enabled (has .service (list "normalizer" "enricher" "sink-warehouse" "sink-webhook")) -}}true{{- end -}}
{{- end -}}
