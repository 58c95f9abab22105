{{/* Names, labels and image references shared by every template. */}}

{{- define "optimodel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-optimodel, or the release name when it already says so. */}}
{{- define "optimodel.fullname" -}}
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

{{- define "optimodel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "optimodel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "optimodel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "optimodel.labels" -}}
helm.sh/chart: {{ include "optimodel.chart" . }}
{{ include "optimodel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: optimodel
{{- end }}

{{- define "optimodel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "optimodel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Kopf peering object name (KopfPeering / ClusterKopfPeering). */}}
{{- define "optimodel.peeringName" -}}
{{- default (include "optimodel.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: repository@digest when a digest is set,
else repository:tag, the tag defaulting to the chart's appVersion.
Call as: include "optimodel.image" (dict "image" .Values.image "root" .)
*/}}
{{- define "optimodel.image" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces whose objects the operator reconciles; empty means every namespace. */}}
{{- define "optimodel.watchedNamespaces" -}}
{{- if eq .Values.watch.mode "namespaced" }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}

{{/*
The operator's command line (the image's entrypoint is `optimodel`). Everything else, including
the peering name, the watched namespaces and the health/metrics ports, is in the settings file.
*/}}
{{- define "optimodel.operatorArgs" -}}
- operator
{{- end }}
