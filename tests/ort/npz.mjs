// NumPy .npy / .npz in plain JavaScript, just enough to move tensors between
// qtk and ONNX Runtime: little-endian C-order arrays of the numeric dtypes and
// bool; zip members stored (what qtk and this file write) or deflated (what
// np.savez_compressed writes), with zip64 sizes as np.savez writes them.
import fs from 'node:fs';
import zlib from 'node:zlib';

// npy descr (without byte-order char) <-> ONNX Runtime tensor type and the
// typed array that holds it.
const DTYPES = [
  { descr: 'f4', ort: 'float32', array: Float32Array },
  { descr: 'f8', ort: 'float64', array: Float64Array },
  { descr: 'f2', ort: 'float16', array: Uint16Array },
  { descr: 'i1', ort: 'int8', array: Int8Array },
  { descr: 'u1', ort: 'uint8', array: Uint8Array },
  { descr: 'i2', ort: 'int16', array: Int16Array },
  { descr: 'u2', ort: 'uint16', array: Uint16Array },
  { descr: 'i4', ort: 'int32', array: Int32Array },
  { descr: 'u4', ort: 'uint32', array: Uint32Array },
  { descr: 'i8', ort: 'int64', array: BigInt64Array },
  { descr: 'u8', ort: 'uint64', array: BigUint64Array },
  { descr: 'b1', ort: 'bool', array: Uint8Array },
];

export function dtypeFromOrt(type) {
  const d = DTYPES.find((x) => x.ort === type);
  if (!d) throw new Error(`dtype '${type}' cannot be stored in .npy by this script`);
  return d;
}

// --- .npy -------------------------------------------------------------------

// Returns { dtype: ORT type name, shape: number[], data: TypedArray }.
export function parseNpy(buf, what) {
  const magic = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]);
  if (buf.length < 10 || !buf.subarray(0, 6).equals(magic)) throw new Error(`${what}: not a .npy file`);
  const major = buf[6];
  let headerLen, offset;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    offset = 10;
  } else if (major === 2 || major === 3) {
    headerLen = buf.readUInt32LE(8);
    offset = 12;
  } else {
    throw new Error(`${what}: unsupported .npy version ${major}`);
  }
  const header = buf.subarray(offset, offset + headerLen).toString('latin1');
  const descrM = header.match(/'descr'\s*:\s*'([^']*)'/);
  const fortranM = header.match(/'fortran_order'\s*:\s*(True|False)/);
  const shapeM = header.match(/'shape'\s*:\s*\(([^)]*)\)/);
  if (!descrM || !fortranM || !shapeM) throw new Error(`${what}: malformed .npy header: ${header}`);
  if (fortranM[1] === 'True') throw new Error(`${what}: Fortran-order arrays are not supported`);
  const order = descrM[1][0];
  const d = DTYPES.find((x) => x.descr === descrM[1].slice(1));
  if (!d || !'<|='.includes(order)) throw new Error(`${what}: unsupported dtype '${descrM[1]}'`);
  const shape = shapeM[1].split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  const numel = shape.reduce((a, b) => a * b, 1);
  const start = offset + headerLen;
  const nbytes = numel * d.array.BYTES_PER_ELEMENT;
  if (buf.length < start + nbytes) throw new Error(`${what}: truncated data (${buf.length - start} of ${nbytes} bytes)`);
  // Copy into a fresh, aligned ArrayBuffer: typed arrays need element alignment.
  const bytes = new Uint8Array(nbytes);
  bytes.set(buf.subarray(start, start + nbytes));
  return { dtype: d.ort, shape, data: new d.array(bytes.buffer, 0, numel) };
}

export function serializeNpy({ dtype, shape, data }) {
  const d = dtypeFromOrt(dtype);
  const order = d.array.BYTES_PER_ELEMENT === 1 ? '|' : '<';
  const shapeStr = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${order}${d.descr}', 'fortran_order': False, 'shape': ${shapeStr}, }`;
  // Pad with spaces so the data starts on a 64-byte boundary, ending in '\n'.
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(pre);
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), body]);
}

// --- zip --------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// Reads every member through the central directory (robust to data
// descriptors and zip64 local headers). Returns [{ name, data: Buffer }].
function readZip(buf, what) {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 22 - 65535); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error(`${what}: not a zip file (no end of central directory)`);
  let count = buf.readUInt16LE(eocd + 10);
  let cdOffset = buf.readUInt32LE(eocd + 16);
  if (cdOffset === 0xffffffff || count === 0xffff) {
    const loc = eocd - 20;  // zip64 end of central directory locator
    if (loc < 0 || buf.readUInt32LE(loc) !== 0x07064b50) throw new Error(`${what}: bad zip64 locator`);
    const rec = Number(buf.readBigUInt64LE(loc + 8));
    count = Number(buf.readBigUInt64LE(rec + 32));
    cdOffset = Number(buf.readBigUInt64LE(rec + 48));
  }
  const members = [];
  let p = cdOffset;
  for (let k = 0; k < count; k++) {
    if (buf.readUInt32LE(p) !== 0x02014b50) throw new Error(`${what}: bad central directory entry ${k}`);
    const method = buf.readUInt16LE(p + 10);
    const crc = buf.readUInt32LE(p + 16);
    let csize = buf.readUInt32LE(p + 20);
    let usize = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    let local = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    // zip64 extended information: present fields in a fixed order.
    let e = p + 46 + nameLen;
    const eEnd = e + extraLen;
    while (e + 4 <= eEnd) {
      const id = buf.readUInt16LE(e);
      const len = buf.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (usize === 0xffffffff) { usize = Number(buf.readBigUInt64LE(q)); q += 8; }
        if (csize === 0xffffffff) { csize = Number(buf.readBigUInt64LE(q)); q += 8; }
        if (local === 0xffffffff) { local = Number(buf.readBigUInt64LE(q)); q += 8; }
      }
      e += 4 + len;
    }
    if (buf.readUInt32LE(local) !== 0x04034b50) throw new Error(`${what}: bad local header for ${name}`);
    const dataStart = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(dataStart, dataStart + csize);
    let data;
    if (method === 0) data = raw;
    else if (method === 8) data = zlib.inflateRawSync(raw);
    else throw new Error(`${what}: member ${name} uses zip method ${method} (only stored and deflate)`);
    if (data.length !== usize || crc32(data) !== crc) throw new Error(`${what}: member ${name} is corrupt`);
    members.push({ name, data });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return members;
}

function writeZip(members) {
  const parts = [];
  const central = [];
  let offset = 0;
  for (const { name, data } of members) {
    const nameBuf = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    if (data.length >= 0xffffffff || offset >= 0xffffffff) throw new Error('npz over 4 GiB is not supported');
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);       // version needed
    lh.writeUInt16LE(0x0800, 6);   // flags: UTF-8 names
    lh.writeUInt16LE(0, 8);        // stored
    lh.writeUInt16LE(0, 10);       // time
    lh.writeUInt16LE(0x21, 12);    // date 1980-01-01: fixed, so output is reproducible
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(data.length, 18);
    lh.writeUInt32LE(data.length, 22);
    lh.writeUInt16LE(nameBuf.length, 26);
    lh.writeUInt16LE(0, 28);
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(20, 4);
    cd.writeUInt16LE(20, 6);
    cd.writeUInt16LE(0x0800, 8);
    cd.writeUInt16LE(0, 10);
    cd.writeUInt16LE(0, 12);
    cd.writeUInt16LE(0x21, 14);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(data.length, 20);
    cd.writeUInt32LE(data.length, 24);
    cd.writeUInt16LE(nameBuf.length, 28);
    cd.writeUInt32LE(offset, 42);
    central.push(cd, nameBuf);
    parts.push(lh, nameBuf, data);
    offset += 30 + nameBuf.length + data.length;
  }
  const cdBuf = Buffer.concat(central);
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(members.length, 8);
  eocd.writeUInt16LE(members.length, 10);
  eocd.writeUInt32LE(cdBuf.length, 12);
  eocd.writeUInt32LE(offset, 16);
  return Buffer.concat([...parts, cdBuf, eocd]);
}

// --- .npz -------------------------------------------------------------------

// Returns a Map name -> { dtype, shape, data }, in file order.
export function readNpz(path) {
  const out = new Map();
  for (const { name, data } of readZip(fs.readFileSync(path), path)) {
    const key = name.endsWith('.npy') ? name.slice(0, -4) : name;
    out.set(key, parseNpy(data, `${path}:${name}`));
  }
  return out;
}

// arrays: iterable of [name, { dtype, shape, data }]. Temp file + rename.
export function writeNpz(path, arrays) {
  const members = [];
  for (const [name, arr] of arrays) members.push({ name: `${name}.npy`, data: serializeNpy(arr) });
  const tmp = `${path}.tmp.${process.pid}`;
  fs.writeFileSync(tmp, writeZip(members));
  fs.renameSync(tmp, path);
}
