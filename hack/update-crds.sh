#!/usr/bin/env bash
# Regenerates every committed copy of the DtsJobReset CRD from the Rust types
# (`dts-operator crd`). The integration test `deploy::crd_copies_match_the_binary` fails when a
# copy drifts; run this after changing src/crd.rs and commit the result.
#
#   hack/update-crds.sh
set -euo pipefail
cd "$(dirname "$0")/.."

copies=(
  crds/dtsops.io_dtsjobresets.yaml
  deploy/helm/dts-operator/crds/dtsops.io_dtsjobresets.yaml
  deploy/kustomize/crds/dtsops.io_dtsjobresets.yaml
)

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cargo run --quiet --locked -p dts-operator -- crd >"$tmp"
for f in "${copies[@]}"; do
  mkdir -p "$(dirname "$f")"
  cp "$tmp" "$f"
  echo "wrote $f"
done
