{{/* Chart name, truncated to 63 chars (DNS label). */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "portcullis.image" -}}
{{- printf "%s:%s" .Values.portcullis.image.repository (default .Chart.AppVersion .Values.portcullis.image.tag) -}}
{{- end -}}

{{/* portcullis.grpcTransport, checked: `unix` or `tcp`. */}}
{{- define "portcullis.grpcTransport" -}}
{{- $t := .Values.portcullis.grpcTransport | toString -}}
{{- if not (has $t (list "unix" "tcp")) -}}
{{- fail (printf "portcullis.grpcTransport must be unix or tcp, not %q" $t) -}}
{{- end -}}
{{- $t -}}
{{- end -}}

{{/* The gRPC Unix socket (grpcTransport: unix), in the portcullis-run emptyDir. */}}
{{- define "portcullis.grpcSocketDir" -}}/var/run/portcullis{{- end -}}
{{- define "portcullis.grpcSocket" -}}{{ include "portcullis.grpcSocketDir" . }}/grpc.sock{{- end -}}

{{- define "portcullis.secretName" -}}
{{- default (include "portcullis.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The portcullis config file: the user's config plus what the chart owns
(listen, data_dir, and api.resource_metadata from portcullis.resourceMetadata
when its resource is set). */}}
{{- define "portcullis.config" -}}
{{- $grpc := printf "127.0.0.1:%v" .Values.portcullis.grpcPort -}}
{{- if eq (include "portcullis.grpcTransport" .) "unix" -}}
{{- $grpc = printf "unix:%s" (include "portcullis.grpcSocket" .) -}}
{{- end -}}
{{- $owned := dict "listen" (dict "grpc" $grpc "http" (printf "0.0.0.0:%v" .Values.portcullis.httpPort)) "data_dir" "/var/lib/portcullis" -}}
{{- with .Values.portcullis.resourceMetadata }}
{{- if .resource }}
{{- $_ := set $owned "api" (dict "resource_metadata" (deepCopy .)) -}}
{{- end }}
{{- end }}
{{- if .Values.portcullis.assertionKeySecret -}}
{{- $_ := set $owned "assertion" (dict "key_file" "/etc/portcullis-assertion/assertion.pem") -}}
{{- end -}}
{{- toYaml (merge $owned (deepCopy .Values.portcullis.config)) -}}
{{- end -}}

{{/* Identity headers portcullis sets; stripped on routes without ext_authz.
     Follows portcullis.config.identity_headers (prefix, mapped claims). */}}
{{- define "portcullis.identityHeaders" -}}
{{- $ih := default dict .Values.portcullis.config.identity_headers -}}
{{- $prefix := default "x-auth-" $ih.prefix | lower -}}
{{- range list "subject" "issuer" "username" "email" "client" "scopes" "method" "token-id" }}
- {{ printf "%s%s" $prefix . }}
{{- end }}
{{- range $claim, $header := default dict $ih.claims }}
- {{ $header | lower }}
{{- end }}
{{- end -}}
