#!/bin/sh
# Exports the PyTorch reference's three models (../shared/reference/pytorch_ref.py: seed-cnn,
# resnet8, mobilenet-tiny; FP32, 1 epoch on 2000 Fashion-MNIST images, or all 60,000 with
# TRAIN_LIMIT=all) with torch.onnx.export and
# converts their M.onnx.expected.npz (256 normalised test images and PyTorch's logits) to JSON.
#
#   tests/onnx_import/make_reference_exports.sh OUT_DIR [REFERENCE_DIR]
#   QS_ONNX_REF_DIR=OUT_DIR build/release/tests/tst_onnx_import referenceModels
#
# The committed ref_resnet8.* and ref_mobilenet-tiny.* fixtures are these exports with the first
# 8 images (npz_to_json.py ... 8); seed-cnn (1.2M parameters, 4.8 MB) is not committed.
set -eu
out=${1:?usage: make_reference_exports.sh OUT_DIR [REFERENCE_DIR]}
ref=${2:-$(dirname "$0")/../../../shared/reference}
here=$(dirname "$0")
mkdir -p "$out"
for m in seed-cnn resnet8 mobilenet-tiny; do
    limit="--train-limit ${TRAIN_LIMIT:-2000}"
    [ "${TRAIN_LIMIT:-2000}" = all ] && limit=""
    # shellcheck disable=SC2086
    /usr/bin/python3 "$ref/pytorch_ref.py" --model "$m" --mode fp32 --epochs 1 $limit --threads 2 \
        --export-onnx "$out/$m.onnx" > "$out/$m.log" 2>&1
    /usr/bin/python3 "$here/npz_to_json.py" "$out/$m.onnx.expected.npz" "$out/$m.json"
    echo "$m: $out/$m.onnx, $out/$m.json"
done
