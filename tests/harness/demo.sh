#!/usr/bin/env bash
# make demo: the newcomer's path on the local cluster. Starts the cluster (make cluster-up), builds
# the images (make images), installs the chart with helm, applies every function in
# examples/functions/, waits until they are Ready, runs examples/executions/ on all three paths
# (the warm agent, a Wasm pod with the agents taken away, a container pod) and prints the
# functions, every result and the three paths' timings side by side. Re-runnable: a second
# run reuses the cluster, the images and the release, and recreates the executions. Every wait is
# bounded; a failure prints the object's conditions and events and the operator's log tail.
#
# Environment: WASMFN_CLUSTER_DIR (the cluster's state dir), WASMFN_IMAGE_TAG (default dev),
# WASMFN_DEMO_SKIP_IMAGES=1 (use the images already in the local registry),
# WASMFN_DEMO_NAMESPACE (default wasmfn-demo).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=demo
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export WASMFN_CACHE=${WASMFN_CACHE:-$HOME/.cache/wasmfn}
export WASMFN_CLUSTER_DIR=${WASMFN_CLUSTER_DIR:-/tmp/wasmfn-cluster}
tag=${WASMFN_IMAGE_TAG:-dev}
ns=${WASMFN_DEMO_NAMESPACE:-wasmfn-demo}
release=wasmfn
release_ns=wasmfn-system
logs=$repo/target/demo
mkdir -p "$logs"

died=""
die() { died=1; say "FAILED: $*" >&2; exit 1; }

# Runs a long step in the background with its output in a log file, printing a progress line
# with the log's last line every 20 s; on failure (or after LIMIT seconds) prints the log's tail.
# Usage: run_step LIMIT NAME LOG COMMAND...
step_pid=""
on_exit() {
  local rc=$?
  [ -z "$step_pid" ] || kill -TERM "$step_pid" 2>/dev/null || true
  # A command that failed outside die (set -e) still gets a line saying where the demo stopped.
  if [ "$rc" != 0 ] && [ -z "$died" ]; then
    say "FAILED (exit $rc) in: $BASH_COMMAND" >&2
  fi
}
trap on_exit EXIT
run_step() {
  local limit=$1 name=$2 log=$3; shift 3
  local t0 last rc
  t0=$(date +%s); last=$t0
  say "$name (log: ${log#"$repo"/})"
  timeout --kill-after=30 "$limit" "$@" >"$log" 2>&1 &
  step_pid=$!
  while kill -0 "$step_pid" 2>/dev/null; do
    sleep 1
    if [ "$(since "$last")" -ge 20 ]; then
      last=$(date +%s)
      say "  ... $name, $(( last - t0 ))s: $(tail -n 1 "$log" | tr -d '\r' | cut -c1-100)"
    fi
  done
  rc=0; wait "$step_pid" || rc=$?
  step_pid=""
  if [ "$rc" != 0 ]; then
    tail -n 40 "$log" >&2
    [ "$rc" != 124 ] || die "$name did not finish within ${limit}s"
    die "$name failed (exit $rc); full log: $log"
  fi
  say "  $name done in $(since "$t0")s"
}

# ---------------------------------------------------------------- prerequisites
[ -x "$WASMFN_CACHE/kubernetes-1.20.2/bin/kubectl" ] ||
  die "the Kubernetes binaries are missing from $WASMFN_CACHE: run make setup"
if [ ! -x "$WASMFN_CACHE/helm/bin/helm" ]; then
  run_step 600 "installing helm" "$logs/setup-helm.log" tests/harness/setup-helm.sh "$WASMFN_CACHE"
fi
helm=$WASMFN_CACHE/helm/bin/helm

# ---------------------------------------------------------------- cluster and images
run_step 1800 "starting the local cluster (make cluster-up, state dir $WASMFN_CLUSTER_DIR)" \
  "$logs/cluster-up.log" make --no-print-directory cluster-up
eval "$(target/debug/wasmfn-cluster env --state-dir "$WASMFN_CLUSTER_DIR")"
export KUBECONFIG
apiserver_port=$(jq -r .apiserver_port "$WASMFN_CLUSTER_DIR/cluster.json")
registry_port=$(jq -r .registry_port "$WASMFN_CLUSTER_DIR/cluster.json")
k() { kubectl --request-timeout=60s "$@"; }
k get nodes >/dev/null || die "the cluster in $WASMFN_CLUSTER_DIR does not answer"

if [ "${WASMFN_DEMO_SKIP_IMAGES:-}" = 1 ]; then
  say "skipping make images (WASMFN_DEMO_SKIP_IMAGES=1): using the images tagged :$tag"
else
  run_step 5400 "building the images (make images, tag :$tag)" "$logs/images.log" \
    env WASMFN_IMAGE_TAG="$tag" make --no-print-directory images
fi
operator_image=$(buildah images --noheading --format '{{.ID}}' "wasmfn.local/operator:$tag" 2>/dev/null | head -n 1)
[ -n "$operator_image" ] || die "no image wasmfn.local/operator:$tag: run make images"

# ---------------------------------------------------------------- diagnostics
operator_logs() { # the last lines of both replicas, without colour codes, long lines cut
  echo "--- operator log tail ($release_ns)" >&2
  k -n "$release_ns" logs -l app.kubernetes.io/component=operator --tail=15 --prefix 2>&1 |
    sed 's/\x1b\[[0-9;]*m//g' | cut -c1-400 >&2 || true
}
explain() { # KIND NAME [NAMESPACE]: conditions, status and events of one object
  local kind=$1 name=$2 namespace=${3:-$ns}
  echo "--- $kind $namespace/$name" >&2
  k -n "$namespace" get "$kind" "$name" -o json 2>/dev/null |
    jq '{phase: .status.phase, reason: .status.reason, message: .status.message,
         conditions: .status.conditions, compile: .status.compile}' >&2 || true
  echo "--- events of $name" >&2
  k -n "$namespace" get events --field-selector "involvedObject.name=$name" \
    -o custom-columns=CREATED:.metadata.creationTimestamp,TYPE:.type,REASON:.reason,MESSAGE:.message >&2 || true
}

# ---------------------------------------------------------------- the chart
say "CRDs: kubectl apply --server-side -f crds/"
k apply --server-side --force-conflicts -f crds/ >/dev/null
k wait --for=condition=Established --timeout=60s crd/wasmfunctions.wasmfn.dev crd/wasmexecutions.wasmfn.dev >/dev/null
for namespace in "$release_ns" "$ns"; do
  k get namespace "$namespace" >/dev/null 2>&1 || k create namespace "$namespace" >/dev/null
done
# The cluster harness makes a RuntimeClass `wasmfn` of its own; the chart's replaces it.
if k get runtimeclass wasmfn >/dev/null 2>&1 &&
   [ "$(k get runtimeclass wasmfn -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by}')" != Helm ]; then
  k delete runtimeclass wasmfn >/dev/null
fi
# Keep the health/metrics port of an existing release (the operator binds it on the node's own
# address, as its pods share the host's network here); else take one free on every address.
metrics_port=$("$helm" get values "$release" -n "$release_ns" -o json 2>/dev/null | jq -r '.metrics.port // empty' || true)
[ -n "$metrics_port" ] || metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])')
helm_args=(
  upgrade --install "$release" charts/wasmfn --namespace "$release_ns" --timeout 5m
  --set localCluster.hostNetwork=true
  --set localCluster.apiServerHost=127.0.0.1
  --set "localCluster.apiServerPort=$apiserver_port"
  --set "metrics.port=$metrics_port"
  # The operator pins the builder's tag to a digest through the cluster's registry.
  --set "compile.builderRegistry=127.0.0.1:$registry_port"
  --set compile.builderRegistryInsecure=true
  # The chart's repositories are the local registry's; only the tag differs from its appVersion.
  --set-string "images.operator.tag=$tag"
  --set-string "images.builder.tag=$tag"
  --set-string "images.runner.tag=$tag"
  --set-string "images.wasmPod.tag=$tag"
  --set-string "images.nodeInstaller.tag=$tag"
  # A rebuilt operator image (same tag) rolls the Deployment; Always makes the nodes pull it.
  --set images.pullPolicy=Always
  --set-string "operator.podAnnotations.wasmfn\.dev/operator-image=$operator_image"
  --set "networkPolicy.namespaces={$release_ns,$ns}"
  # The warm agents' module cache stays inside the cluster's state directory.
  --set "agent.cacheHostPath=$WASMFN_CLUSTER_DIR/agent-cache"
)
t=$(date +%s)
say "helm upgrade --install $release charts/wasmfn -n $release_ns (apiserver 127.0.0.1:$apiserver_port, metrics port $metrics_port)"
if ! "$helm" "${helm_args[@]}" >"$logs/helm.log" 2>&1; then
  cat "$logs/helm.log" >&2; die "helm upgrade --install failed"
fi
say "  helm returned in $(since "$t")s; waiting for the operator's rollout"
if ! k -n "$release_ns" rollout status deployment/wasmfn-operator --timeout=300s >/dev/null; then
  k -n "$release_ns" get pods -o wide >&2 || true
  for pod in $(k -n "$release_ns" get pods -o name 2>/dev/null); do explain "${pod%%/*}" "${pod#*/}" "$release_ns"; done
  operator_logs
  die "the operator did not become ready within 300s"
fi
lease_holder=""
for _ in $(seq 60); do
  lease_holder=$(k -n "$release_ns" get lease wasmfn-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
  [ -z "$lease_holder" ] || break
  sleep 1
done
[ -n "$lease_holder" ] || { operator_logs; die "no operator replica took the Lease within 60s"; }
say "  operator ready; leader: $lease_holder"

# ---------------------------------------------------------------- functions
# "NAME:PHASE ..." -> "PHASE: NAME NAME; PHASE: NAME" (progress lines).
by_phase() {
  printf '%s\n' "$@" | awk -F: '{names[$2] = names[$2] " " $1} END {
    sep = ""; for (p in names) { printf "%s%s:%s", sep, (p == "-" ? "no status yet" : p), names[p]; sep = "; " } }'
}
# "name phase" of every function ("-" until the status describes the current generation).
function_names=$(k create --dry-run=client -f examples/functions/ -o name | sed 's|.*/||')
say "applying $(wc -w <<<"$function_names") functions from examples/functions/ into namespace $ns"
k -n "$ns" apply --server-side --force-conflicts -f examples/functions/ >/dev/null
phases() {
  k -n "$ns" get wasmfunctions -o json |
    jq -r '.items[] | "\(.metadata.name) \(if .status.observedGeneration == .metadata.generation then (.status.phase // "-") else "-" end)"'
}
deadline=$(( $(date +%s) + 1200 ))
last=0
while :; do
  current=$(phases) || current=""   # a failed poll counts as no progress
  missing="" ready=0 failed=""
  for name in $function_names; do
    phase=$(awk -v n="$name" '$1 == n {print $2}' <<<"$current")
    case $phase in
      Ready) ready=$((ready + 1)) ;;
      Failed) failed+=" $name" ;;
      *) missing+=" $name:${phase:--}" ;;
    esac
  done
  if [ -n "$failed" ]; then
    for name in $failed; do explain wasmfunction "$name"; done
    operator_logs
    die "functions failed:$failed"
  fi
  [ -n "$missing" ] || break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    for item in $missing; do explain wasmfunction "${item%%:*}"; done
    k -n "$ns" get jobs,pods -o wide >&2 || true
    operator_logs
    die "functions not Ready after 1200s:$missing"
  fi
  if [ "$(since "$last")" -ge 10 ]; then
    last=$(date +%s)
    say "  $ready/$(wc -w <<<"$function_names") Ready; $(by_phase $missing)"
  fi
  sleep 2
done
say "all $(wc -w <<<"$function_names") functions Ready"

# ---------------------------------------------------------------- executions
# Waits until every execution named in $1 has a final phase (bounded; explains the stragglers).
wait_finished() {
  local names=$1 deadline=$(( $(date +%s) + 600 )) last=0 current pending phase name item
  while :; do
    current=$(k -n "$ns" get wasmexecutions -o json | jq -r '.items[] | "\(.metadata.name) \(.status.phase // "-")"') || current=""
    pending=""
    for name in $names; do
      phase=$(awk -v n="$name" '$1 == n {print $2}' <<<"$current")
      case $phase in Succeeded|Failed|TimedOut) ;; *) pending+=" $name:${phase:--}" ;; esac
    done
    [ -n "$pending" ] || return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      for item in $pending; do explain wasmexecution "${item%%:*}"; done
      k -n "$ns" get pods -o wide >&2 || true
      operator_logs
      die "executions not finished after 600s:$pending"
    fi
    if [ "$(since "$last")" -ge 10 ]; then
      last=$(date +%s)
      say "  $(by_phase $pending)"
    fi
    sleep 1
  done
}
# Agent pods of the release (the DaemonSet's).
agent_pods() { k -n "$release_ns" get pods -l app.kubernetes.io/component=agent -o name 2>/dev/null | wc -l; }

# Pass 1: each example's WasmEdge run goes to the warm agent, its Container run to a container pod.
# (An earlier demo stopped during pass 2 may have left the agents pointed at no node.)
k -n "$release_ns" patch daemonset wasmfn-agent --type json \
  -p '[{"op":"remove","path":"/spec/template/spec/nodeSelector/wasmfn.dev~1demo-no-agent"}]' >/dev/null 2>&1 || true
k -n "$release_ns" rollout status daemonset/wasmfn-agent --timeout=180s >/dev/null ||
  die "the agents did not become Ready within 180s"
execution_names=$(k create --dry-run=client -f examples/executions/ -o name | sed 's|.*/||')
say "recreating $(wc -w <<<"$execution_names") executions from examples/executions/"
k -n "$ns" delete wasmexecutions -l wasmfn.dev/demo-pass --ignore-not-found --wait=true --timeout=120s >/dev/null
k -n "$ns" delete -f examples/executions/ --ignore-not-found --wait=true --timeout=120s >/dev/null
k -n "$ns" create -f examples/executions/ >/dev/null
wait_finished "$execution_names"
say "all executions finished (WasmEdge ones on the agent, if one is Ready)"

# Pass 2: the same WasmEdge and Auto runs with no agent anywhere: placement falls back to Wasm pods.
# The DaemonSet is pointed at no node for the pass (a label no node has) and restored after it.
say "taking the agents away to run the WasmEdge examples again as Wasm pods (placement's fallback)"
k -n "$release_ns" patch daemonset wasmfn-agent --type merge \
  -p '{"spec":{"template":{"spec":{"nodeSelector":{"wasmfn.dev/demo-no-agent":"true"}}}}}' >/dev/null
for _ in $(seq 120); do [ "$(agent_pods)" = 0 ] && break; sleep 1; done
[ "$(agent_pods)" = 0 ] || die "the agent pods did not go away within 120s"
wasm_pod_runs=$(k create --dry-run=client -f examples/executions/ -o json |
  jq -c '(if .kind == "List" then .items[] else . end) | select(.spec.runtime != "Container")
         | del(.metadata.namespace) | .metadata.name |= sub("-(wasmedge|auto)$"; "-wasm-pod")
         | .metadata.labels["wasmfn.dev/demo-pass"] = "wasm-pod"')
wasm_pod_names=$(jq -r '.metadata.name' <<<"$wasm_pod_runs")
jq -s '{apiVersion: "v1", kind: "List", items: .}' <<<"$wasm_pod_runs" | k -n "$ns" create -f - >/dev/null
wait_finished "$wasm_pod_names"
k -n "$release_ns" patch daemonset wasmfn-agent --type json \
  -p '[{"op":"remove","path":"/spec/template/spec/nodeSelector/wasmfn.dev~1demo-no-agent"}]' >/dev/null
say "Wasm pod runs finished; agents restored"

# ---------------------------------------------------------------- results
echo
echo "== kubectl -n $ns get wasmfn -o wide"
k -n "$ns" get wasmfn -o wide
echo
echo "== results"
k -n "$ns" get wasmexecutions -o json | jq -r '
  .items | sort_by(.metadata.name)[] | .status as $s |
  "\(.metadata.name): \($s.phase // "-") on \($s.runtime // "-") via \($s.path // "-")\(if $s.agent then " \($s.agent)" else "" end) (node \($s.node // "-")), exit \($s.exitCode // "-"), \($s.duration // "-")",
  (if $s.stdout then "  stdout: \($s.stdout | rtrimstr("\n") | gsub("\n"; "\n          "))" else empty end),
  (if $s.stderr then "  stderr: \($s.stderr | rtrimstr("\n") | gsub("\n"; "\n          "))" else empty end),
  (if $s.phase != "Succeeded" then "  reason: \($s.reason // "-"): \($s.message // "")" else empty end)'
echo
echo "== the three paths side by side (durationMs: the guest's run; total: created -> final, whole seconds)"
k -n "$ns" get wasmexecutions -o json | jq -r '
  def total: if .status.completionTime then
      ((.status.completionTime | fromdate) - (.metadata.creationTimestamp | fromdate)) else null end;
  [.items[] | select(.metadata.name | test("-(wasmedge|auto|wasm-pod|container)$"))
   | {example: (.metadata.name | sub("-(wasmedge|auto|wasm-pod|container)$"; "")),
      path: (.status.path // "-"), ms: (.status.durationMs // null), total: total}]
  | group_by(.example)[]
  | (map({(.path): .}) | add) as $by
  | def cell(p): if $by[p] then "\(if $by[p].ms then ($by[p].ms * 10 | round / 10) else "-" end) ms / \($by[p].total // "-") s" else "-" end;
    [.[0].example, cell("Agent"), cell("WasmPod"), cell("ContainerPod")] | @tsv' |
  (printf 'EXAMPLE\tAGENT\tWASM POD\tCONTAINER POD\n'; cat) | column -t -s $'\t'
not_succeeded=$(k -n "$ns" get wasmexecutions -o json | jq -r '.items[] | select(.status.phase != "Succeeded") | .metadata.name')
echo
cat <<EOF
The cluster keeps running. Use it with:
$(target/debug/wasmfn-cluster env --state-dir "$WASMFN_CLUSTER_DIR" | sed 's/^/  /')
  kubectl -n $ns get wasmfn -o wide
  kubectl -n $ns get wex order-total-wasmedge -o yaml
  kubectl -n $ns create -f examples/executions/go.yaml     # after deleting the old ones
  kubectl -n $release_ns logs -l app.kubernetes.io/component=operator --prefix
Stop it with: make cluster-down$( [ "$WASMFN_CLUSTER_DIR" = /tmp/wasmfn-cluster ] || printf ' WASMFN_CLUSTER_DIR=%s' "$WASMFN_CLUSTER_DIR")
EOF
if [ -n "$not_succeeded" ]; then
  for name in $not_succeeded; do explain wasmexecution "$name"; done
  operator_logs
  die "executions that did not succeed: $(echo $not_succeeded)"
fi
say "done"
