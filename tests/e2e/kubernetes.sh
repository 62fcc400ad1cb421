#!/usr/bin/env bash
# Renders every overlay in deploy/kubernetes/overlays with kustomize (kubectl's
# built-in one; Debian's kubernetes-client when no kubectl is installed) and
# validates the result, strictly, against the Kubernetes schemas with
# kubernetes-validate (PyPI).
set -euo pipefail
cd "$(dirname "$0")/../.."
kubernetes_version=${KUBERNETES_VERSION:-1.31.0}

source scripts/apt.sh
kubectl kustomize --help >/dev/null 2>&1 || apt_install "its kubectl renders the manifests" kubernetes-client

# No overlay ships a usable token: each installation generates its own.
for tokens in deploy/kubernetes/overlays/*/tokens.toml; do
  if grep -q '^\[\[tokens\]\]' "$tokens"; then
    echo "$tokens ships a token: an overlay must ship none" >&2
    exit 1
  fi
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  kubectl kustomize "$overlay" 2>/dev/null >"$out/$name.yaml"
  kinds=$(grep -c '^kind:' "$out/$name.yaml")
  kubernetes-validate --strict --quiet -k "$kubernetes_version" "$out/$name.yaml"
  echo "overlay $name: $kinds resources valid against Kubernetes $kubernetes_version"
done
