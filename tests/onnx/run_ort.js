// Runs an exported ONNX model in onnxruntime (CPU) on an IDX image file and prints one
// predicted class per line: node run_ort.js MODEL.onnx IMAGES.idx3[.gz] [LIMIT] [--outputs]
// IMAGES is [N, H, W] (idx3, one channel) or [N, C, H, W] (idx4, colour planes).
// With --outputs each line is the model's output row instead (comma-separated, full precision).
// The model takes float32 [N, C, H, W] pixels in [0, 1]; its normalisation is in the graph.
// NODE_PATH must name the node_modules folder holding onnxruntime-node.
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

async function main() {
  const args = process.argv.slice(2);
  const outputs = args.includes('--outputs');
  const [modelPath, imagesPath, limitArg] = args.filter((a) => a !== '--outputs');
  let buf = fs.readFileSync(imagesPath);
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = zlib.gunzipSync(buf);
  const magic = buf.readUInt32BE(0);
  if (magic !== 0x803 && magic !== 0x804) throw new Error(imagesPath + ': not an idx3/idx4 image file');
  let n = buf.readUInt32BE(4);
  const c = magic === 0x804 ? buf.readUInt32BE(8) : 1;
  const off = magic === 0x804 ? 20 : 16;
  const h = buf.readUInt32BE(off - 8), w = buf.readUInt32BE(off - 4);
  const px = c * h * w;
  if (limitArg) n = Math.min(n, parseInt(limitArg, 10));
  // QS_ORT_GRAPH_OPTIMIZATION=disabled runs the graph node by node, as the ONNX spec defines each
  // operator, without onnxruntime's fusions (its Pad fusion, for one, merges a Pad into the
  // AveragePool after it, which changes what ceil_mode makes).
  const options = { intraOpNumThreads: 2, interOpNumThreads: 1 };
  if (process.env.QS_ORT_GRAPH_OPTIMIZATION) options.graphOptimizationLevel = process.env.QS_ORT_GRAPH_OPTIMIZATION;
  const session = await ort.InferenceSession.create(modelPath, options);
  const inputName = session.inputNames[0], outputName = session.outputNames[0];
  const batch = 500, out = [];
  for (let b = 0; b < n; b += batch) {
    const m = Math.min(batch, n - b);
    const x = new Float32Array(m * px);
    for (let i = 0; i < m * px; ++i) x[i] = buf[off + b * px + i] / 255;
    const res = await session.run({ [inputName]: new ort.Tensor('float32', x, [m, c, h, w]) });
    const y = res[outputName], k = y.dims[1];
    for (let i = 0; i < m; ++i) {
      if (outputs) {
        out.push(Array.from(y.data.subarray(i * k, (i + 1) * k), (v) => v.toPrecision(9)).join(','));
        continue;
      }
      let best = 0;
      for (let j = 1; j < k; ++j) if (y.data[i * k + j] > y.data[i * k + best]) best = j;
      out.push(best);
    }
  }
  process.stdout.write(out.join('\n') + '\n');
}

main().catch((e) => { console.error('run_ort: ' + (e && e.message ? e.message : e)); process.exit(1); });
