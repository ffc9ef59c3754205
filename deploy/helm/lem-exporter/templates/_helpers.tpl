{{/* Names and labels. */}}
{{- define "lem-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lem-exporter.fullname" -}}
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

{{- define "lem-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lem-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lem-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lem-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: exporter
app.kubernetes.io/part-of: lem
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The image, always with its registry. */}}
{{- define "lem-exporter.image" -}}
{{- $repo := .Values.image.repository }}
{{- $first := splitList "/" $repo | first }}
{{- if or (not (contains "/" $repo)) (not (or (contains "." $first) (contains ":" $first) (eq $first "localhost"))) }}
{{- fail (printf "image.repository %q names no registry (want e.g. ghcr.io/lem-energy/lem-exporter): a short name is resolved differently by each node's container runtime" $repo) }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "lem-exporter.secretName" -}}
{{- .Values.markers.existingSecret | default (include "lem-exporter.fullname" .) }}
{{- end }}

{{- define "lem-exporter.claimName" -}}
{{- .Values.record.volume.persistentVolumeClaim.existingClaim | default (printf "%s-recordings" (include "lem-exporter.fullname" .)) }}
{{- end }}

{{/*
The job and instance labels every scrape of lem-exporter gets, in the ServiceMonitor and the PodMonitor as in
deploy/prometheus/prometheus.yml: the alert rules select job="lem-exporter", and instance is the node's name, the
instance the exporter gives its remote-write stream.
*/}}
{{- define "lem-exporter.relabelings" -}}
- targetLabel: job
  replacement: lem-exporter
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: instance
{{- with .relabelings }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Settings that cannot work together fail the render with one line. */}}
{{- define "lem-exporter.validate" -}}
{{- if and .Values.serviceMonitor.enabled .Values.podMonitor.enabled }}
{{- fail "serviceMonitor.enabled and podMonitor.enabled are both true: each pod would be scraped twice under the same job and instance; enable one" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) }}
{{- fail "serviceMonitor.enabled needs service.enabled (it scrapes through the Service); use podMonitor without a Service" }}
{{- end }}
{{- if and .Values.remoteWrite.bearerTokenSecret.name (not .Values.remoteWrite.url) }}
{{- fail "remoteWrite.bearerTokenSecret.name is set but remoteWrite.url is empty" }}
{{- end }}
{{- end }}
