{{/* The release's base name: the release name, plus "-wasmfn" unless it already says wasmfn. */}}
{{- define "wasmfn.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wasmfn.operatorName" -}}
{{- printf "%s-operator" (include "wasmfn.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wasmfn.nodeInstallerName" -}}
{{- printf "%s-node-installer" (include "wasmfn.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wasmfn.agentName" -}}
{{- printf "%s-agent" (include "wasmfn.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object of the release. */}}
{{- define "wasmfn.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wasmfn
{{- end -}}

{{/* Selector of the operator's pods. */}}
{{- define "wasmfn.operatorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "wasmfn.agentSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* The same selector as the operator's WASMFN_AGENT_SELECTOR. */}}
{{- define "wasmfn.agentSelectorString" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=agent" .Chart.Name .Release.Name -}}
{{- end -}}

{{- define "wasmfn.nodeInstallerSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-installer
{{- end -}}

{{/* The securityContext of every non-privileged container: `restricted` Pod Security. */}}
{{- define "wasmfn.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
