{{/*
Resource names are fixed, not prefixed with the release name: the generated WorkflowTemplate
(pipeline/cluster/workflow.py) refers to them by these exact names. Hence one release per namespace.
*/}}

{{- define "grace-pipeline.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grace-pipeline.labels" -}}
helm.sh/chart: {{ include "grace-pipeline.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: grace-pipeline
{{- end }}

{{/* The ServiceAccount the workflow pods run as (pipeline.cluster.workflow.SERVICE_ACCOUNT). */}}
{{- define "grace-pipeline.serviceAccountName" -}}
grace-pipeline-workflow
{{- end }}
