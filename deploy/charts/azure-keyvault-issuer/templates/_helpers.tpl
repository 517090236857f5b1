{{/* Chart name, possibly overridden. */}}
{{- define "akv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Prefix of every object name. With the release name `azure-keyvault-issuer`
it is `azure-keyvault-issuer`, so the objects get the same names as in the
kustomize base (config/default, namePrefix `azure-keyvault-issuer-`).
*/}}
{{- define "akv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "akv.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "akv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "akv.labels" -}}
helm.sh/chart: {{ include "akv.chart" . }}
app.kubernetes.io/name: {{ include "akv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: azure-keyvault-issuer
{{- end -}}

{{/* Labels selecting the controller pods (immutable once installed). */}}
{{- define "akv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "akv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end -}}

{{- define "akv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-controller-manager" (include "akv.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "akv.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "akv.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.controller.clusterResourceNamespace -}}
{{- end -}}

{{- define "akv.leaderElectionNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace -}}
{{- end -}}

{{/* The controller's ServiceAccount as an RBAC subject. */}}
{{- define "akv.subject" -}}
- kind: ServiceAccount
  name: {{ include "akv.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
