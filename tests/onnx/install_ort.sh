#!/usr/bin/env bash
# Installs onnxruntime-node into a cache folder (once) for the ONNX tests:
#   tests/onnx/install_ort.sh [DIR]   (default $QS_NODE_CACHE or ~/.cache/quantscope/node)
# ONNXRUNTIME_NODE_INSTALL=skip: its postinstall would download GPU files; the CPU binary is
# inside the npm package. Exits 0 when npm or the registry is unreachable (the tests then skip
# and say why), 1 only on a broken install.
set -uo pipefail
dir=${1:-${QS_NODE_CACHE:-$HOME/.cache/quantscope/node}}
version=1.30.0
if [ -f "$dir/node_modules/onnxruntime-node/package.json" ] &&
   grep -q "\"version\": \"$version\"" "$dir/node_modules/onnxruntime-node/package.json"; then
  echo "install_ort: onnxruntime-node $version present in $dir"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install_ort: npm not found; the onnxruntime tests will skip"
  exit 0
fi
mkdir -p "$dir"
cd "$dir" || exit 1
[ -f package.json ] || echo '{"name":"quantscope-test-node","private":true}' > package.json
echo "install_ort: installing onnxruntime-node@$version into $dir (about 290 MB)"
if ! ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error "onnxruntime-node@$version"; then
  echo "install_ort: npm install failed (registry unreachable?); the onnxruntime tests will skip"
  exit 0
fi
node -e "require('onnxruntime-node')" || { echo "install_ort: onnxruntime-node installed but does not load"; exit 1; }
echo "install_ort: ok"
