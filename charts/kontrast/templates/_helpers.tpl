{{/*
Chart name, cut to 63 characters (the limit of a label value and of most object names).
*/}}
{{- define "kontrast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release's objects. A release named like the chart ("kontrast") is not
repeated: its objects are "kontrast", "kontrast-edit", … rather than "kontrast-kontrast".
*/}}
{{- define "kontrast.fullname" -}}
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

{{/*
Chart label value: name and version.
*/}}
{{- define "kontrast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the release.
*/}}
{{- define "kontrast.labels" -}}
helm.sh/chart: {{ include "kontrast.chart" . }}
app.kubernetes.io/name: {{ include "kontrast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kontrast
{{- end }}

{{/*
Labels of the operator's own objects (Deployment, its pods, the metrics Service).
*/}}
{{- define "kontrast.operatorLabels" -}}
{{ include "kontrast.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels that select the operator's pods. Never change them in an upgrade: a Deployment's selector is
immutable. The component keeps them apart from the worker pods, which carry
app.kubernetes.io/name=kontrast as well.
*/}}
{{- define "kontrast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kontrast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "kontrast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kontrast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: a digest wins over a tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "kontrast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The namespace the operator watches with rbac.scope=namespace (default: the release's).
*/}}
{{- define "kontrast.watchNamespace" -}}
{{- default .Release.Namespace .Values.rbac.watchNamespace }}
{{- end }}

{{/*
Name of the leader-election Lease.
*/}}
{{- define "kontrast.leaseName" -}}
{{- default (include "kontrast.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Whether the cluster serves the Prometheus Operator's API (ServiceMonitor, PodMonitor,
PrometheusRule). Without it those objects are left out, so the chart installs anyway.
*/}}
{{- define "kontrast.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/*
The permissions the operator needs on the objects of the runs it reconciles, derived from what it
calls (operator/src/controller.rs, operator/src/main.rs, kube-runtime's event recorder):
  - contrastiveruns: list+watch (the controller's watch), status: patch (server-side apply);
  - pods: list+watch (owned), create+patch (server-side apply: the API server authorises an apply
    that creates the object as "create" as well as "patch"), delete (failed or suspended gangs);
    list also finds evaluation pods by job-name;
  - services, configmaps: list+watch (owned), create+patch (server-side apply);
  - jobs: list+watch (owned), get (an evaluation's state), create+patch (server-side apply);
  - events.k8s.io events: create, and patch to count repeats of an event;
  - PodGroups of Volcano and the scheduler-plugins: create+patch (server-side apply), only when
    asked for.
tests/tests/chart.rs holds the same list and fails when either changes alone; it also installs
the chart on a real API server and runs the operator under exactly these rules.
*/}}
{{- define "kontrast.operatorRules" -}}
- apiGroups: ["kontrast.dev"]
  resources: ["contrastiveruns"]
  verbs: ["list", "watch"]
- apiGroups: ["kontrast.dev"]
  resources: ["contrastiveruns/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "delete", "list", "patch", "watch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create", "list", "patch", "watch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "patch", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.gangSchedulers }}
- apiGroups: ["scheduling.volcano.sh", "scheduling.x-k8s.io"]
  resources: ["podgroups"]
  verbs: ["create", "patch"]
{{- end }}
{{- end }}
