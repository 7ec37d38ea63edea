{{/* Names. */}}
{{- define "surge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "surge.fullname" -}}
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

{{/* A component's resource name: <fullname>-<component>. */}}
{{- define "surge.component" -}}
{{- printf "%s-%s" (include "surge.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "surge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "surge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "api"). */}}
{{- define "surge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "surge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "surge.componentLabels" -}}
{{ include "surge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "surge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "surge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "surge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "surge.secretName" -}}
{{- default (include "surge.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The TURN URLs the API hands out: the built-in coturn's, then `turn.urls`; empty: no TURN. */}}
{{- define "surge.turn.urls" -}}
{{- $urls := list -}}
{{- $b := .Values.turn.builtin -}}
{{- if $b.enabled -}}
{{- $urls = append $urls (printf "turn:%s:%d?transport=udp" $b.host (int64 $b.port)) -}}
{{- $urls = append $urls (printf "turn:%s:%d?transport=tcp" $b.host (int64 $b.port)) -}}
{{- if $b.tlsSecretName -}}
{{- $urls = append $urls (printf "turns:%s:%d?transport=tcp" $b.host (int64 $b.tlsPort)) -}}
{{- end -}}
{{- end -}}
{{- concat $urls .Values.turn.urls | join "," -}}
{{- end -}}

{{- define "surge.redis.builtin" -}}
{{- if not .Values.redis.url -}}true{{- end -}}
{{- end -}}

{{- define "surge.postgresql.builtin" -}}
{{- if not .Values.postgresql.url -}}true{{- end -}}
{{- end -}}

{{/*
The Secret's values, computed once per render and memoised in a private map so every
template (the Secret, the migration hook's Secret) sees the same generated values.
Order: a value given in values.yaml, else the one in the Secret already in the cluster
(so upgrades keep it), else a new random one.
*/}}
{{- define "surge.secretData" -}}
{{- $cache := .Values.__surgeSecretData | default dict -}}
{{- if not $cache.adminToken -}}
{{- $existing := dict -}}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "surge.fullname" .) -}}
{{- if and $found $found.data -}}{{- $existing = $found.data -}}{{- end -}}
{{- $pick := dict -}}
{{- range $key, $spec := dict "admin-token" (list .Values.secrets.adminToken 40) "redis-password" (list .Values.redis.builtin.password 32) "database-password" (list .Values.postgresql.builtin.password 32) "turn-secret" (list .Values.turn.secret 40) -}}
{{- $given := index $spec 0 -}}
{{- if $given -}}
{{- $_ := set $pick $key $given -}}
{{- else if hasKey $existing $key -}}
{{- $_ := set $pick $key (index $existing $key | b64dec) -}}
{{- else -}}
{{- $_ := set $pick $key (randAlphaNum (index $spec 1)) -}}
{{- end -}}
{{- end -}}
{{- /* The join-token keypair (Ed25519). The shards get only the public half; Helm cannot
derive a public key, but it can put it in a self-signed certificate made with the private
key, which `--join-token-public-key` accepts (only the key in it is used). The certificate
is kept while the private key is, so an upgrade does not roll the shards. */ -}}
{{- $private := .Values.secrets.joinTokenPrivateKey -}}
{{- $existingPrivate := "" -}}
{{- if hasKey $existing "join-token-private-key" -}}
{{- $existingPrivate = index $existing "join-token-private-key" | b64dec -}}
{{- end -}}
{{- if not $private -}}
{{- $private = $existingPrivate | default (genPrivateKey "ed25519") -}}
{{- end -}}
{{- $public := .Values.secrets.joinTokenPublicKey -}}
{{- if and (not $public) (eq $private $existingPrivate) (hasKey $existing "join-token-public-key") -}}
{{- $public = index $existing "join-token-public-key" | b64dec -}}
{{- end -}}
{{- if not $public -}}
{{- $public = (genSelfSignedCertWithKey "surge-join-tokens" nil nil 36500 $private).Cert -}}
{{- end -}}
{{- $redisUrl := .Values.redis.url -}}
{{- if not $redisUrl -}}
{{- $redisUrl = printf "redis://:%s@%s:6379/0" (index $pick "redis-password" | urlquery) (include "surge.component" (dict "root" . "component" "redis")) -}}
{{- end -}}
{{- $databaseUrl := .Values.postgresql.url -}}
{{- if not $databaseUrl -}}
{{- $pg := .Values.postgresql.builtin -}}
{{- $databaseUrl = printf "postgres://%s:%s@%s:5432/%s" ($pg.username | urlquery) (index $pick "database-password" | urlquery) (include "surge.component" (dict "root" . "component" "postgresql")) $pg.database -}}
{{- end -}}
{{- $cache = dict "joinTokenPrivateKey" $private "joinTokenPublicKey" $public "joinTokenKeyId" (printf "%s\n%s" $private .Values.secrets.joinTokenPublicKey | sha256sum) "adminToken" (index $pick "admin-token") "redisPassword" (index $pick "redis-password") "databasePassword" (index $pick "database-password") "redisUrl" $redisUrl "databaseUrl" $databaseUrl "turnSecret" (index $pick "turn-secret") -}}
{{- $_ := set .Values "__surgeSecretData" $cache -}}
{{- end -}}
{{- toJson $cache -}}
{{- end -}}

{{/*
A pod's annotations: its own (values) plus a checksum of the Secret values it uses, so a
rotated key or password rolls exactly the pods that read it. Call with
(dict "root" $ "keys" (list "joinTokenKeyId" ...) "extra" .Values.x.podAnnotations).
No checksum with an existingSecret: the chart cannot see its content, and a value that
changed on every upgrade would restart (and drain) every shard each time.
*/}}
{{- define "surge.podAnnotations" -}}
{{- $annotations := dict -}}
{{- if not .root.Values.secrets.existingSecret -}}
{{- $data := include "surge.secretData" .root | fromJson -}}
{{- $used := list -}}
{{- range .keys -}}{{- $used = append $used (index $data .) -}}{{- end -}}
{{- $_ := set $annotations "checksum/secret" ($used | join "\n" | sha256sum) -}}
{{- end -}}
{{- $annotations = merge $annotations (.extra | default dict) -}}
{{- with $annotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* Environment every Surge container shares. */}}
{{- define "surge.commonEnv" -}}
- name: SURGE_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: SURGE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "surge.secretName" . }}
      key: redis-url
- name: SURGE_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
- name: SURGE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "surge.secretName" . }}
      key: admin-token
{{- end -}}

{{/* Required (hard) or preferred (soft) anti-affinity over nodes for one component. */}}
{{- define "surge.antiAffinity" -}}
podAntiAffinity:
{{- if eq .mode "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "surge.selectorLabels" . | nindent 10 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "surge.selectorLabels" . | nindent 12 }}
{{- end }}
{{- end -}}

{{/* Checks across values that the JSON schema cannot express. */}}
{{- define "surge.validate" -}}
{{- $sfu := .Values.sfu -}}
{{- $grace := int64 $sfu.terminationGracePeriodSeconds -}}
{{- if and (gt $grace 0) (lt $grace (int64 $sfu.drainDeadlineSeconds)) -}}
{{- fail (printf "sfu.terminationGracePeriodSeconds (%d) must be at least sfu.drainDeadlineSeconds (%d), or Kubernetes kills shards before their calls have drained" $grace (int64 $sfu.drainDeadlineSeconds)) -}}
{{- end -}}
{{- $scaler := $sfu.autoscaling -}}
{{- if $scaler.enabled -}}
{{- if lt (int64 $scaler.maxReplicas) (int64 $scaler.minReplicas) -}}
{{- fail (printf "sfu.autoscaling.maxReplicas (%d) must be at least minReplicas (%d)" (int64 $scaler.maxReplicas) (int64 $scaler.minReplicas)) -}}
{{- end -}}
{{- if and (eq $scaler.mode "keda") (not $scaler.keda.serverAddress) -}}
{{- fail "sfu.autoscaling.keda.serverAddress must name the Prometheus KEDA queries (e.g. http://prometheus-operated.monitoring.svc:9090)" -}}
{{- end -}}
{{- end -}}
{{- if eq $sfu.networkMode "podPort" -}}
{{- $shards := int64 (include "surge.sfu.plannedShards" .) -}}
{{- $mediaFirst := int64 $sfu.media.nodePortBase -}}
{{- $mediaEnd := add $mediaFirst (mul $shards (int64 $sfu.workers)) -}}
{{- if lt $mediaFirst 30000 -}}
{{- fail (printf "sfu.media.nodePortBase (%d) is below 30000, the start of Kubernetes' default NodePort range" $mediaFirst) -}}
{{- end -}}
{{- if gt $mediaEnd 32768 -}}
{{- fail (printf "sfu.media: the UDP NodePorts %d-%d of %d shards (%s) go past 32767, the end of Kubernetes' default NodePort range; lower nodePortBase, shards or workers" $mediaFirst (sub $mediaEnd 1) $shards (ternary "sfu.autoscaling.maxReplicas" "sfu.replicas" $scaler.enabled)) -}}
{{- end -}}
{{- end -}}
{{- $hpa := .Values.api.autoscaling -}}
{{- if and $hpa.enabled (lt (int64 $hpa.maxReplicas) (int64 $hpa.minReplicas)) -}}
{{- fail (printf "api.autoscaling.maxReplicas (%d) must be at least minReplicas (%d)" (int64 $hpa.maxReplicas) (int64 $hpa.minReplicas)) -}}
{{- end -}}
{{- with .Values.secrets.joinTokenPrivateKey -}}
{{- if not (contains "-----BEGIN PRIVATE KEY-----" .) -}}
{{- fail "secrets.joinTokenPrivateKey must be an Ed25519 private key in PEM (-----BEGIN PRIVATE KEY-----, from `openssl genpkey -algorithm ed25519`)" -}}
{{- end -}}
{{- end -}}
{{- $turn := .Values.turn.builtin -}}
{{- if and $turn.enabled (not $turn.host) -}}
{{- fail "turn.builtin.host must name the address callers reach coturn at (it goes into the TURN URLs)" -}}
{{- end -}}
{{- if and $turn.enabled (gt (int64 $turn.relayPortMin) (int64 $turn.relayPortMax)) -}}
{{- fail (printf "turn.builtin.relayPortMin (%d) must not exceed relayPortMax (%d)" (int64 $turn.relayPortMin) (int64 $turn.relayPortMax)) -}}
{{- end -}}
{{- with .Values.secrets.joinTokenPublicKey -}}
{{- if contains "PRIVATE KEY" . -}}
{{- fail "secrets.joinTokenPublicKey holds a private key: the shards must get only the public key (`openssl pkey -pubout`)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Connections the built-in PostgreSQL accepts: every API pod at the autoscaler's maximum with
its whole pool, plus room for the migration Job and an operator's psql.
*/}}
{{- define "surge.postgresql.maxConnections" -}}
{{- $api := .Values.api -}}
{{- $pods := ternary $api.autoscaling.maxReplicas $api.replicas $api.autoscaling.enabled -}}
{{- max 100 (add (mul (int64 $pods) (int64 $api.databaseMaxConnections)) 10) -}}
{{- end -}}

{{/*
The internal URL the API relays signalling to: the pod's name through the headless Service
(which publishes not-ready, draining shards), or sfu.signalUrl. SURGE_SHARD_ID is defined
before SURGE_SIGNAL_URL in the pod, so Kubernetes expands it.
*/}}
{{- define "surge.sfu.signalUrl" -}}
{{- if .Values.sfu.signalUrl -}}
{{- .Values.sfu.signalUrl -}}
{{- else -}}
{{- printf "http://$(SURGE_SHARD_ID).%s.%s.svc.%s:%d" (include "surge.component" (dict "root" . "component" "sfu")) .Release.Namespace .Values.clusterDomain (int64 .Values.sfu.httpPort) -}}
{{- end -}}
{{- end -}}

{{/* The grace period a stopping shard gets: the drain deadline plus a margin by default. */}}
{{- define "surge.sfu.terminationGracePeriodSeconds" -}}
{{- $grace := int64 .Values.sfu.terminationGracePeriodSeconds -}}
{{- if gt $grace 0 -}}
{{- $grace -}}
{{- else -}}
{{- add (int64 .Values.sfu.drainDeadlineSeconds) 60 -}}
{{- end -}}
{{- end -}}

{{/*
The most shards the chart plans ports for: the autoscaler's maximum when it is on (a shard it
adds must find its NodePort Service already there), else the fixed count.
*/}}
{{- define "surge.sfu.plannedShards" -}}
{{- $sfu := .Values.sfu -}}
{{- ternary (int64 $sfu.autoscaling.maxReplicas) (int64 $sfu.replicas) $sfu.autoscaling.enabled -}}
{{- end -}}

{{/*
The StatefulSet's replicas under the autoscaler: the count it runs now (read back from the
cluster, kept within min..max), so a `helm upgrade` neither resets what the autoscaler chose
nor drops the field (Helm's three-way merge would then set 1 and drain the other shards);
minReplicas on install and where the cluster cannot be read (helm template).
*/}}
{{- define "surge.sfu.autoscaledReplicas" -}}
{{- $scaler := .Values.sfu.autoscaling -}}
{{- $replicas := int64 $scaler.minReplicas -}}
{{- $live := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "surge.component" (dict "root" . "component" "sfu")) -}}
{{- if and $live $live.spec $live.spec.replicas -}}
{{- $replicas = min (max (int64 $live.spec.replicas) $replicas) (int64 $scaler.maxReplicas) -}}
{{- end -}}
{{- $replicas -}}
{{- end -}}

{{/* The Prometheus series the shard autoscaler follows (what the shards export). */}}
{{- define "surge.sfu.autoscalingSeries" -}}
{{- if eq .Values.sfu.autoscaling.metric "egress" -}}surge_sfu_egress_estimate_bps{{- else -}}surge_sfu_participants{{- end -}}
{{- end -}}

{{/*
Autoscaler behaviour shared by the HPA and KEDA's: add shards at once (a wave of calls
arrives in minutes and a new shard takes rooms as soon as it is ready), remove them one at a
time after a long quiet spell, because each removal drains a shard for up to its deadline.
*/}}
{{- define "surge.sfu.autoscalingBehavior" -}}
scaleUp:
  stabilizationWindowSeconds: 0
  selectPolicy: Max
  policies:
    - type: Percent
      value: 100
      periodSeconds: 60
    - type: Pods
      value: 4
      periodSeconds: 60
scaleDown:
  stabilizationWindowSeconds: {{ .Values.sfu.autoscaling.scaleDownStabilizationSeconds }}
  policies:
    - type: Pods
      value: 1
      periodSeconds: 300
{{- end -}}
