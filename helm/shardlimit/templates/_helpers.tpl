{{- define "shardlimit.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shardlimit.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "shardlimit.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The headless Service that gives each cluster member a stable DNS name. */}}
{{- define "shardlimit.peersService" -}}
{{- printf "%s-peers" (include "shardlimit.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The chart's etcd pods: a name of their own, so the servers' selector never matches them. */}}
{{- define "shardlimit.etcdSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-etcd
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shardlimit.etcdName" -}}
{{- printf "%s-etcd" (include "shardlimit.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where files are mounted in the server container: one place, used by the volumes and the flags. */}}
{{- define "shardlimit.paths" -}}
limits: /etc/shardlimit/limits
tls: /etc/shardlimit/tls
etcdTls: /etc/shardlimit/etcd-tls
etcdAuth: /etc/shardlimit/etcd-auth
auth: /etc/shardlimit/auth
token: /etc/shardlimit/token
{{- end -}}

{{/*
A Kubernetes memory quantity (integer with an optional binary or decimal suffix, or plain bytes)
in bytes. values.schema.json admits only these shapes.
*/}}
{{- define "shardlimit.memoryBytes" -}}
{{- $q := toString . -}}
{{- $digits := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $digits $q -}}
{{- $mult := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (eq $digits "") (not (hasKey $mult $unit)) -}}
{{- fail (printf "resources.limits.memory %q is not a memory quantity like 2Gi or 1500Mi" $q) -}}
{{- end -}}
{{- mul (int64 $digits) (get $mult $unit) -}}
{{- end -}}

{{/*
The heap Node may use, in MiB (--max-old-space-size): the memory limit less memory.reservedMi
(Node itself, code, gRPC and HTTP buffers, the young generation).
*/}}
{{- define "shardlimit.heapMi" -}}
{{- $limit := dig "limits" "memory" "" .Values.resources -}}
{{- if eq (toString $limit) "" -}}
{{- fail "resources.limits.memory is required: the heap (--max-old-space-size) and --max-counters are sized from it" -}}
{{- end -}}
{{- $heapMi := sub (div (int64 (include "shardlimit.memoryBytes" $limit)) 1048576) (int64 .Values.memory.reservedMi) -}}
{{- if le $heapMi 0 -}}
{{- fail (printf "resources.limits.memory %s leaves no heap after memory.reservedMi (%d MiB): raise the limit" (toString $limit) (int64 .Values.memory.reservedMi)) -}}
{{- end -}}
{{- $heapMi -}}
{{- end -}}

{{/*
--max-counters: the counters that fit in memory.counterSharePercent of the heap at
memory.bytesPerCounter each (bench/RESULTS.md Finding 3: ~485 B per batched counter, ~412 B per
Check counter); the rest of the heap is headroom for garbage collection, handoffs and calls in
flight. maxCounters "auto" takes that number; a number larger than it fails the rendering.
*/}}
{{- define "shardlimit.maxCounters" -}}
{{- $heapMi := int64 (include "shardlimit.heapMi" .) -}}
{{- $m := .Values.memory -}}
{{- $fit := div (div (mul $heapMi 1048576 (int64 $m.counterSharePercent)) 100) (int64 $m.bytesPerCounter) -}}
{{- if lt $fit 1 -}}
{{- fail (printf "resources.limits.memory leaves room for no counter (%d MiB of heap)" $heapMi) -}}
{{- end -}}
{{- if eq (toString .Values.maxCounters) "auto" -}}
{{- $fit -}}
{{- else -}}
{{- $want := int64 .Values.maxCounters -}}
{{- if gt $want $fit -}}
{{- $needMi := add (div (mul $want (int64 $m.bytesPerCounter) 100) (mul (int64 $m.counterSharePercent) 1048576)) 1 (int64 $m.reservedMi) -}}
{{- fail (printf "maxCounters %d does not fit resources.limits.memory %s: at %d B per counter in %d%% of a %d MiB heap (the limit less memory.reservedMi %d MiB) at most %d fit; raise resources.limits.memory to at least %dMi, or lower maxCounters (or set it to auto)" $want (toString .Values.resources.limits.memory) (int64 $m.bytesPerCounter) (int64 $m.counterSharePercent) $heapMi (int64 $m.reservedMi) $fit $needMi) -}}
{{- end -}}
{{- $want -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: on SIGTERM a cluster member drains (drainTimeoutMs), leaves the
cluster (2 s, LEAVE_TIMEOUT_MS in src/app/serve.ts) and lets calls in flight finish
(shutdownGraceMs); standalone only the last. Plus terminationMarginSeconds for the process to
exit. A value set by hand must be at least that, or Kubernetes' SIGKILL would cut the drain.
*/}}
{{- define "shardlimit.gracePeriod" -}}
{{- $v := .Values -}}
{{- $ms := int64 $v.shutdownGraceMs -}}
{{- $why := printf "shutdownGraceMs %d" $ms -}}
{{- if eq $v.mode "cluster" -}}
{{- $ms = add $ms (int64 $v.drainTimeoutMs) 2000 -}}
{{- $why = printf "drainTimeoutMs %d + 2000 ms to leave the cluster + %s" (int64 $v.drainTimeoutMs) $why -}}
{{- end -}}
{{- $need := add (div (add $ms 999) 1000) (int64 $v.terminationMarginSeconds) -}}
{{- $set := $v.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- $need -}}
{{- else if lt (int64 $set) $need -}}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than the shutdown needs: %d s (%s, rounded up to seconds, + terminationMarginSeconds %d); raise it, or leave it unset to have it computed" (int64 $set) $need $why (int64 $v.terminationMarginSeconds)) -}}
{{- else -}}
{{- int64 $set -}}
{{- end -}}
{{- end -}}

{{/* The etcd client URLs: the chart's own etcd members by their stable names, or etcd.endpoints. */}}
{{- define "shardlimit.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "shardlimit.etcdName" . -}}
{{- $scheme := ternary "https" "http" (ne .Values.etcd.tls.serverSecretName "") -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-%d.%s.%s.svc:2379" $scheme $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- join "," .Values.etcd.endpoints -}}
{{- end -}}
{{- end -}}

{{/* Refusals of value combinations the schema cannot express; each names the values to change. */}}
{{- define "shardlimit.validate" -}}
{{- $v := .Values -}}
{{- if eq $v.mode "standalone" -}}
{{- if ne (int $v.replicaCount) 1 -}}
{{- fail (printf "mode standalone runs one server that owns every key: replicaCount must be 1 (got %d); set mode: cluster for more servers" (int $v.replicaCount)) -}}
{{- end -}}
{{- if or $v.etcd.enabled $v.etcd.endpoints -}}
{{- fail "etcd.enabled / etcd.endpoints are for mode: cluster; standalone servers use no etcd" -}}
{{- end -}}
{{- else -}}
{{- if and $v.etcd.enabled $v.etcd.endpoints -}}
{{- fail "mode cluster: set etcd.endpoints (an etcd you run) or etcd.enabled: true (the chart runs one), not both" -}}
{{- end -}}
{{- if not (or $v.etcd.enabled $v.etcd.endpoints) -}}
{{- fail "mode cluster needs etcd: set etcd.endpoints (client URLs like https://etcd-0.etcd:2379) or etcd.enabled: true" -}}
{{- end -}}
{{- end -}}
{{- if and (ne $v.etcd.tls.serverSecretName "") (not $v.etcd.enabled) -}}
{{- fail "etcd.tls.serverSecretName is the serving certificate of the chart's own etcd: set etcd.enabled: true, or leave it empty for an external etcd" -}}
{{- end -}}
{{- if and $v.etcd.enabled (ne $v.etcd.tls.secretName "") (eq $v.etcd.tls.serverSecretName "") -}}
{{- fail "etcd.tls.secretName is set but the chart's etcd serves plain HTTP: set etcd.tls.serverSecretName too" -}}
{{- end -}}
{{- if and (ne $v.auth.file "") (ne $v.auth.existingConfigMap "") -}}
{{- fail "auth.file and auth.existingConfigMap both set: the authorisation file comes from one of them" -}}
{{- end -}}
{{- if and (eq $v.limitsFrom "etcd") (ne $v.mode "cluster") -}}
{{- fail "limitsFrom etcd needs mode: cluster (the servers read pushed limits from the cluster's etcd); standalone reads the limits value" -}}
{{- end -}}
{{- end -}}

{{/*
The server's command line: the one place the chart names `shardlimit serve`'s flags (a renamed
flag is one edit here). Paths are where the volumes below are mounted.
*/}}
{{- define "shardlimit.serverArgs" -}}
{{- $v := .Values -}}
{{- $p := include "shardlimit.paths" . | fromYaml -}}
- serve
{{- if eq $v.limitsFrom "etcd" }}
- --limits-from=etcd
{{- else }}
- --config={{ $p.limits }}
{{- end }}
{{- if $v.allowLimitRemoval }}
- --allow-limit-removal
{{- end }}
- --grpc-port={{ int $v.grpcPort }}
- --http-port={{ int $v.httpPort }}
- --log-level={{ $v.logLevel }}
- --max-counters={{ include "shardlimit.maxCounters" . }}
- --shutdown-grace={{ int64 $v.shutdownGraceMs }}
- --heap-growing-percent={{ int $v.memory.heapGrowingPercent }}
{{- if eq $v.mode "cluster" }}
- --etcd={{ include "shardlimit.etcdEndpoints" . }}
- --prefix={{ $v.prefix }}
- --id=$(POD_NAME)
- --advertise-address=$(POD_NAME).{{ include "shardlimit.peersService" . }}.{{ .Release.Namespace }}.svc:{{ int $v.grpcPort }}
- --lease-ttl={{ int $v.leaseTtlSeconds }}
- --drain-timeout={{ int64 $v.drainTimeoutMs }}
{{- if ne $v.etcd.tls.secretName "" }}
- --etcd-ca={{ $p.etcdTls }}/ca.crt
{{- if $v.etcd.tls.clientCert }}
- --etcd-cert={{ $p.etcdTls }}/tls.crt
- --etcd-key={{ $p.etcdTls }}/tls.key
{{- end }}
{{- end }}
{{- if ne $v.etcd.authSecret "" }}
- --etcd-auth-file={{ $p.etcdAuth }}/auth
{{- end }}
{{- end }}
{{- if ne $v.tls.secretName "" }}
- --tls-cert={{ $p.tls }}/tls.crt
- --tls-key={{ $p.tls }}/tls.key
- --tls-ca={{ $p.tls }}/ca.crt
- --tls-client-auth={{ $v.tls.clientAuth }}
{{- if ne $v.tls.peerServerName "" }}
- --peer-server-name={{ $v.tls.peerServerName }}
{{- end }}
{{- end }}
{{- if or (ne $v.auth.file "") (ne $v.auth.existingConfigMap "") }}
- --auth-file={{ $p.auth }}/auth.yaml
- --limits-read={{ $v.auth.limitsRead }}
{{- end }}
{{- if ne $v.tokenSecret "" }}
- --token-file={{ $p.token }}/token
{{- end }}
{{- if not $v.reflection }}
- --no-reflection
{{- end }}
{{- range $v.extraArgs }}
- {{ . }}
{{- end }}
{{- end -}}

{{/* The server pod, the same in both modes (a Deployment's standalone, a StatefulSet's cluster). */}}
{{- define "shardlimit.podTemplate" -}}
{{- $v := .Values -}}
{{- $p := include "shardlimit.paths" . | fromYaml -}}
metadata:
  labels: {{- include "shardlimit.selector" . | nindent 4 }}
  annotations:
    {{- if $v.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.httpPort | int | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  terminationGracePeriodSeconds: {{ include "shardlimit.gracePeriod" . }}
  securityContext: {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations: {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.affinity }}
  affinity: {{- toYaml $v.affinity | nindent 4 }}
  {{- else if eq $v.mode "cluster" }}
  # Members on different nodes where possible: a node lost takes one member's slices, not several.
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels: {{- include "shardlimit.selector" . | nindent 16 }}
  {{- end }}
  containers:
    - name: shardlimit
      image: "{{ $v.image.repository }}:{{ $v.image.tag }}"
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: {{- include "shardlimit.serverArgs" . | nindent 8 }}
      env:
        - name: POD_NAME
          valueFrom: { fieldRef: { fieldPath: metadata.name } }
        # The heap the memory limit leaves after memory.reservedMi; --max-counters is sized in it.
        # The young generation's semi-spaces as the image sets them (src/app/heap.ts).
        - name: NODE_OPTIONS
          value: "--max-old-space-size={{ include "shardlimit.heapMi" . }} --max-semi-space-size={{ int $v.memory.semiSpaceMi }}"
      ports:
        - { name: grpc, containerPort: {{ int $v.grpcPort }} }
        - { name: http, containerPort: {{ int $v.httpPort }} }
      # Ready once it serves (cluster: once its slices' counters have arrived); a rolling update
      # moves to the next server only then. Not ready from the first moment of a drain on.
      readinessProbe:
        httpGet: { path: /readyz, port: http }
        periodSeconds: 2
        failureThreshold: 2
      livenessProbe:
        httpGet: { path: /healthz, port: http }
        periodSeconds: 10
        failureThreshold: 3
      securityContext: {{- toYaml $v.securityContext | nindent 8 }}
      resources: {{- toYaml $v.resources | nindent 8 }}
      volumeMounts:
        {{- if ne $v.limitsFrom "etcd" }}
        - { name: limits, mountPath: {{ $p.limits }}, readOnly: true }
        {{- end }}
        {{- if ne $v.tls.secretName "" }}
        - { name: tls, mountPath: {{ $p.tls }}, readOnly: true }
        {{- end }}
        {{- if and (eq $v.mode "cluster") (ne $v.etcd.tls.secretName "") }}
        - { name: etcd-tls, mountPath: {{ $p.etcdTls }}, readOnly: true }
        {{- end }}
        {{- if and (eq $v.mode "cluster") (ne $v.etcd.authSecret "") }}
        - { name: etcd-auth, mountPath: {{ $p.etcdAuth }}, readOnly: true }
        {{- end }}
        {{- if or (ne $v.auth.file "") (ne $v.auth.existingConfigMap "") }}
        - { name: auth, mountPath: {{ $p.auth }}, readOnly: true }
        {{- end }}
        {{- if ne $v.tokenSecret "" }}
        - { name: token, mountPath: {{ $p.token }}, readOnly: true }
        {{- end }}
  # Whole directories, never subPath: the kubelet then swaps changed Secrets and ConfigMaps in
  # place, and the server re-reads its certificates, limits and authorisation file. Secrets are
  # defaultMode 288 (0440, owner and fsGroup read), written in decimal: YAML 1.1 and 1.2 read a
  # leading 0 differently.
  volumes:
    {{- if ne $v.limitsFrom "etcd" }}
    - name: limits
      configMap:
        name: {{ include "shardlimit.fullname" . }}-limits
    {{- end }}
    {{- if ne $v.tls.secretName "" }}
    - name: tls
      secret: { secretName: {{ $v.tls.secretName }}, defaultMode: 288 }
    {{- end }}
    {{- if and (eq $v.mode "cluster") (ne $v.etcd.tls.secretName "") }}
    - name: etcd-tls
      secret: { secretName: {{ $v.etcd.tls.secretName }}, defaultMode: 288 }
    {{- end }}
    {{- if and (eq $v.mode "cluster") (ne $v.etcd.authSecret "") }}
    - name: etcd-auth
      secret: { secretName: {{ $v.etcd.authSecret }}, defaultMode: 288 }
    {{- end }}
    {{- if or (ne $v.auth.file "") (ne $v.auth.existingConfigMap "") }}
    - name: auth
      configMap:
        name: {{ $v.auth.existingConfigMap | default (printf "%s-auth" (include "shardlimit.fullname" .)) }}
    {{- end }}
    {{- if ne $v.tokenSecret "" }}
    - name: token
      secret: { secretName: {{ $v.tokenSecret }}, defaultMode: 288 }
    {{- end }}
{{- end -}}
