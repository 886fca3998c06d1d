{{/* The chart's name, or nameOverride. */}}
{{- define "wasmfn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
  The release's base name: fullnameOverride, else the release name plus "-<name>" unless it
  already contains the name.
*/}}
{{- define "wasmfn.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "wasmfn.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
  An image reference from images.<name> (pass the image's values as .image and the root as
  .root): repository:tag, the tag defaulting to the chart's appVersion; repository@digest when a
  digest is set.
*/}}
{{- define "wasmfn.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (toString (default .root.Chart.AppVersion $image.tag)) -}}
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
app.kubernetes.io/name: {{ include "wasmfn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wasmfn
{{- end -}}

{{/* Selector of the operator's pods. */}}
{{- define "wasmfn.operatorSelector" -}}
app.kubernetes.io/name: {{ include "wasmfn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "wasmfn.agentSelector" -}}
app.kubernetes.io/name: {{ include "wasmfn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* The same selector as the operator's WASMFN_AGENT_SELECTOR. */}}
{{- define "wasmfn.agentSelectorString" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=agent" (include "wasmfn.name" .) .Release.Name -}}
{{- end -}}

{{- define "wasmfn.nodeInstallerSelector" -}}
app.kubernetes.io/name: {{ include "wasmfn.name" . }}
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

{{/*
  What becomes of the RuntimeClass: "create" (rendered; also when this release made the existing
  one), "foreign" (one of that name exists and is not this release's: left alone) or "off"
  (wasmedge.runtimeClass.create=false). `lookup` sees nothing under `helm template`.
*/}}
{{- define "wasmfn.runtimeClassState" -}}
{{- if not .Values.wasmedge.runtimeClass.create -}}
off
{{- else -}}
{{- $existing := lookup "node.k8s.io/v1" "RuntimeClass" "" .Values.wasmedge.runtimeClass.name -}}
{{- $annotations := dig "metadata" "annotations" (dict) $existing -}}
{{- if and $existing (not (and (eq (get $annotations "meta.helm.sh/release-name") .Release.Name) (eq (get $annotations "meta.helm.sh/release-namespace") .Release.Namespace))) -}}
foreign
{{- else -}}
create
{{- end -}}
{{- end -}}
{{- end -}}
