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
