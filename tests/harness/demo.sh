#!/usr/bin/env bash
# make demo (after make cluster-up): runs a sample Job on each node of the local cluster and shows
# the nodes, the pods and their logs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
eval "$(target/debug/wasmfn-cluster env --state-dir "${WASMFN_CLUSTER_DIR:-/tmp/wasmfn-cluster}")"

if [ -z "$(buildah images -q wasmfn.local/probe:dev 2>/dev/null)" ]; then
  echo "== demo: building images"; tests/harness/images.sh
fi
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n demo delete job --all --ignore-not-found >/dev/null
for node in $(kubectl get nodes -o jsonpath='{.items[*].metadata.name}'); do
  name=hello-${node//./-}
  echo "== demo: Job $name on node $node"
  kubectl -n demo apply -f - >/dev/null <<JOB
apiVersion: batch/v1
kind: Job
metadata:
  name: $name
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      nodeSelector:
        kubernetes.io/hostname: "$node"
      containers:
      - name: probe
        image: wasmfn.local/probe:dev
        args: ["hello"]
JOB
done
kubectl -n demo wait job --all --for=condition=complete --timeout=120s
echo; echo "== kubectl get nodes,pods -o wide"
kubectl get nodes -o wide
kubectl -n demo get pods -o wide
echo; echo "== logs"
for job in $(kubectl -n demo get jobs -o jsonpath='{.items[*].metadata.name}'); do
  printf '%s: ' "$job"; kubectl -n demo logs "job/$job"
done
echo
echo "The cluster keeps running; use it with:"
target/debug/wasmfn-cluster env --state-dir "${WASMFN_CLUSTER_DIR:-/tmp/wasmfn-cluster}"
echo "Stop it with: make cluster-down"
