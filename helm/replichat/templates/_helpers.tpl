{{/*
Names and labels shared by every template. Object names come from .Values.name (default "chat"), not from
the release name, because the replicas find each other by the fixed DNS names chat-N.chat-peers.
*/}}

{{/* Labels every object carries. */}}
{{- define "replichat.labels" -}}
app.kubernetes.io/name: replichat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The labels that select the replicas (never the role label: a selector of a StatefulSet is immutable). */}}
{{- define "replichat.serverSelector" -}}
app.kubernetes.io/name: replichat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* The image of the server and of the CLI pod. */}}
{{- define "replichat.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The configuration Lease's name (--kubernetes-lease-name). */}}
{{- define "replichat.leaseName" -}}
{{ .Values.configurationStore.kubernetes.leaseName | default (printf "%s-configuration" .Values.clusterName) }}
{{- end }}

{{/* Fully qualified name of a Service of this release, with the namespace taken from the pod's environment. */}}
{{- define "replichat.serviceHost" -}}
{{ .service }}.$(POD_NAMESPACE).svc.{{ .root.Values.clusterDomain }}
{{- end }}

{{/* REPLICHAT_SERVERS for the CLI: the leader's Service first, then any ready replica (which redirects). */}}
{{- define "replichat.clientServers" -}}
{{ include "replichat.serviceHost" (dict "service" .Values.name "root" .) }}:{{ .Values.ports.client }},{{ include "replichat.serviceHost" (dict "service" (printf "%s-replicas" .Values.name) "root" .) }}:{{ .Values.ports.client }}
{{- end }}

{{/* Security context of every container: non-root, read-only root file system, no capabilities. */}}
{{- define "replichat.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: [ALL]
{{- end }}

{{/* Security context of every pod. */}}
{{- define "replichat.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}
