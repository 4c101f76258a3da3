/**
 * safetensors: header reader (never reads tensor data) and a streaming writer.
 * Format: u64-LE header length N, N bytes of UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?},
 * then the data section; offsets are relative to the data section (byte 8 + N).
 * Only the dtypes a Qwen checkpoint can hold are supported: F32, F16, BF16 (little-endian).
 */
import { promises as fsp } from 'fs';
import * as os from 'os';
import { QwenError, abortError } from '../errors';

export type StDType = 'F32' | 'F16' | 'BF16';
export const DTYPE_BYTES: Readonly<Record<StDType, number>> = { F32: 4, F16: 2, BF16: 2 };

export interface StTensor {
  name: string;
  dtype: StDType;
  shape: number[];
  offset: number; // absolute byte offset of the data in the file
  nbytes: number;
}

/** Dtypes of the safetensors spec that we recognise but cannot load (anything else is "unknown"). */
const UNSUPPORTED = new Set(['BOOL', 'U8', 'I8', 'I16', 'U16', 'I32', 'U32', 'I64', 'U64', 'F64', 'C64', 'F8_E4M3',
  'F8_E5M2', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4']);
const SUPPORTED = 'F32, F16, BF16';
/** A real header is ~25 KB for Qwen-7B; 100 MB is the limit the safetensors crate uses against hostile files. */
const MAX_HEADER = 100_000_000;

export async function readSafetensorsHeader(
  path: string,
): Promise<{ tensors: Map<string, StTensor>; metadata: Record<string, string>; fileSize: number }> {
  const bad = (msg: string, tensor?: string) =>
    new QwenError('E_BAD_CHECKPOINT', `${path}: ${tensor !== undefined ? `tensor ${JSON.stringify(tensor)}: ` : ''}${msg}`);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new QwenError('E_BAD_CHECKPOINT', `${path}: ${code === 'ENOENT' ? 'not found' : `cannot open (${code ?? e})`}`, {
      cause: e,
    });
  }
  let text: string;
  let fileSize: number;
  let dataStart: number;
  try {
    fileSize = (await fh.stat()).size;
    if (fileSize < 8) throw bad(`file is ${fileSize} bytes, shorter than the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    await readExactly(fh, lenBuf, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n === 0n) throw bad('header length is 0');
    if (n > BigInt(MAX_HEADER)) throw bad(`header length ${n} is absurdly large (limit ${MAX_HEADER} bytes)`);
    if (8n + n > BigInt(fileSize)) throw bad(`header length ${n} runs past the end of the file (${fileSize} bytes)`);
    dataStart = 8 + Number(n);
    const hdr = Buffer.alloc(Number(n));
    await readExactly(fh, hdr, 8);
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(hdr);
    } catch {
      throw bad('header is not valid UTF-8');
    }
  } finally {
    await fh.close();
  }

  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('header is not a JSON object');
  const entries = Object.entries(json as Record<string, unknown>);
  const dup = duplicateTopLevelKey(text);
  if (dup !== undefined) throw bad('appears twice in the header', dup);

  const metadata: Record<string, string> = {};
  const tensors = new Map<string, StTensor>();
  const ranges: Array<{ name: string; begin: number; end: number }> = [];
  const dataSize = fileSize - dataStart;
  for (const [name, e] of entries) {
    if (name === '__metadata__') {
      if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad('"__metadata__" must be an object of strings');
      for (const [k, v] of Object.entries(e)) {
        if (typeof v !== 'string') throw bad(`"__metadata__" value of ${JSON.stringify(k)} must be a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof e !== 'object' || e === null || Array.isArray(e)) throw bad('entry is not an object', name);
    const { dtype, shape, data_offsets: offs } = e as Record<string, unknown>;
    if (typeof dtype !== 'string') throw bad(`"dtype" must be a string (got ${JSON.stringify(dtype)})`, name);
    if (!(dtype in DTYPE_BYTES)) {
      const kind = UNSUPPORTED.has(dtype) ? 'unsupported' : 'unknown';
      throw bad(`${kind} dtype ${JSON.stringify(dtype)} (supported: ${SUPPORTED})`, name);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`"shape" must be an array of non-negative integers (got ${JSON.stringify(shape)})`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw bad(`"data_offsets" must be two non-negative integers (got ${JSON.stringify(offs)})`, name);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) throw bad(`data_offsets [${begin}, ${end}] are inverted (begin > end)`, name);
    if (end > dataSize) {
      throw bad(
        `data ends at byte ${dataStart + end} but the file has only ${fileSize} bytes: file truncated ` +
          `(expected at least ${dataStart + end} bytes, actual ${fileSize})`,
        name,
      );
    }
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const want = numel * DTYPE_BYTES[dtype as StDType];
    if (!Number.isSafeInteger(want) || want !== end - begin) {
      throw bad(`holds ${end - begin} bytes but shape [${shape}] x ${dtype} needs ${want}`, name);
    }
    tensors.set(name, { name, dtype: dtype as StDType, shape: shape as number[], offset: dataStart + begin, nbytes: want });
    if (end > begin) ranges.push({ name, begin, end });
  }
  // Overlap check: after sorting by start, any range starting before the furthest end seen so far overlaps it.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let far: (typeof ranges)[number] | undefined;
  for (const r of ranges) {
    if (far && r.begin < far.end) {
      throw bad(`byte range [${r.begin}, ${r.end}) overlaps tensor ${JSON.stringify(far.name)} [${far.begin}, ${far.end})`, r.name);
    }
    if (!far || r.end > far.end) far = r;
  }
  return { tensors, metadata, fileSize };
}

async function readExactly(fh: fsp.FileHandle, buf: Buffer, position: number): Promise<void> {
  for (let done = 0; done < buf.length; ) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new Error('unexpected end of file');
    done += bytesRead;
  }
}

/**
 * JSON.parse silently keeps the last of duplicate keys; a safetensors file with two entries of one name is corrupt.
 * The text already parsed as an object, so a plain depth/string scan finds its top-level keys. Returns the first
 * repeated key, or undefined. Linear in the header size (~25 KB for Qwen-7B).
 */
function duplicateTopLevelKey(s: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    if (ch === 0x22) {
      let j = i + 1;
      while (s.charCodeAt(j) !== 0x22) j += s.charCodeAt(j) === 0x5c ? 2 : 1; // skip escapes
      if (depth === 1 && expectKey) {
        const key = JSON.parse(s.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (ch === 0x7b || ch === 0x5b) {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (ch === 0x7d || ch === 0x5d) depth--;
    else if (ch === 0x2c && depth === 1) expectKey = true;
  }
  return undefined;
}

// ---- scalar conversions (u16 = the raw 16-bit pattern) ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24; // zero / subnormal
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function f32ToBf16(f: number): number {
  f32[0] = f;
  return f32BitsToBf16(u32[0]);
}

export function f32ToF16(f: number): number {
  f32[0] = f;
  return f32BitsToF16(u32[0]);
}

/*
 * The bulk kernels below must stay self-contained (no references outside their own bodies except each other and
 * Math): makeRandom.ts ships their source text to worker threads.
 */

/** float32 bits -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32BitsToBf16(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u >>> 0) + 0x7fff + ((u >>> 16) & 1)) >>> 16; // no wrap: largest non-NaN pattern is 0xff800000
}

/** float32 bits -> IEEE binary16 bits, round to nearest even, subnormals, overflow to inf, NaN kept quiet. */
export function f32BitsToF16(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal (2^-25): rounds to zero
    const m = mant | 0x800000; // 24-bit significand; f16 subnormal unit is 2^-24, so keep m >> (14 - e)
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rem = m & ((1 << shift) - 1);
    let r = m >>> shift;
    if (rem > half || (rem === half && r & 1)) r++; // may carry into the smallest normal: still the right encoding
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++; // carry may roll into the exponent, up to inf: correct
  return sign | r;
}

/** Encode n = src.length float32 values as dtype into dst (dst.byteLength == n * DTYPE_BYTES[dtype], 2-aligned). */
export function encodeF32(src: Float32Array, dtype: string, dst: Uint8Array): void {
  const n = src.length;
  if (dtype === 'F32') {
    dst.set(new Uint8Array(src.buffer, src.byteOffset, n * 4));
    return;
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  const out = new Uint16Array(dst.buffer, dst.byteOffset, n);
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) {
      const u = bits[i];
      out[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < n; i++) out[i] = f32BitsToF16(bits[i]);
  }
}

// ---- writer ----

export interface StWriteTensor {
  name: string;
  dtype: StDType;
  shape: number[];
  /** Float32 values of elements [start, start+count) into out (out.length === count). Either this or `encoded`. */
  fill?: (start: number, count: number, out: Float32Array) => void;
  /** Alternative to fill: the already-encoded bytes of elements [start, start+count) (e.g. from a worker thread). */
  encoded?: (start: number, count: number) => Uint8Array | Promise<Uint8Array>;
}

export interface StWriteOptions {
  chunkElements?: number; // elements per fill/encoded call (default 4 Mi); memory is O(chunk), never O(tensor)
  prefetch?: number; // how many `encoded` chunks may be in flight ahead of the write position (default 1)
  signal?: AbortSignal;
  onBytes?: (written: number) => void; // bytes of tensor data written so far in this file
}

/** Header bytes (u64 length + JSON padded with spaces to a multiple of 8); data_offsets contiguous in the given order. */
export function encodeSafetensorsHeader(
  tensors: ReadonlyArray<{ name: string; dtype: StDType; shape: number[] }>,
  metadata?: Record<string, string>,
): { header: Buffer; dataBytes: number } {
  const obj: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) obj.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    if (typeof t.name !== 'string' || t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(obj, t.name)) {
      throw new QwenError('E_BAD_ARG', `tensor name ${JSON.stringify(t.name)} is invalid or repeated`);
    }
    if (!(t.dtype in DTYPE_BYTES)) throw new QwenError('E_BAD_ARG', `tensor "${t.name}": dtype ${t.dtype} (supported: ${SUPPORTED})`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new QwenError('E_BAD_ARG', `tensor "${t.name}": shape must be non-negative integers`);
    }
    const n = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    obj[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8; // keeps the data section 8-aligned, as the Rust writer does
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, dataBytes: off };
}

/** Stream tensors to `path` chunk by chunk; on any failure the partial file is removed. Resolves to the file size. */
export async function writeSafetensors(
  path: string,
  tensors: StWriteTensor[],
  metadata?: Record<string, string>,
  options: StWriteOptions = {},
): Promise<number> {
  if (os.endianness() !== 'LE') throw new QwenError('E_BACKEND', 'safetensors writer needs a little-endian host');
  const chunk = options.chunkElements ?? 4 << 20;
  if (!Number.isSafeInteger(chunk) || chunk <= 0) throw new QwenError('E_BAD_ARG', `chunkElements must be a positive integer`);
  for (const t of tensors) {
    if (!t.fill === !t.encoded) throw new QwenError('E_BAD_ARG', `tensor "${t.name}": give exactly one of fill / encoded`);
  }
  const { header, dataBytes } = encodeSafetensorsHeader(tensors, metadata);

  // Every chunk in file order: [tensor, first element, count].
  const jobs: Array<[StWriteTensor, number, number]> = [];
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    for (let s = 0; s < n; s += chunk) jobs.push([t, s, Math.min(chunk, n - s)]);
  }
  // Two slots so the fill of chunk k+1 overlaps the (thread-pool) write of chunk k; sized by the largest chunk.
  const most = jobs.reduce((m, [, , c]) => Math.max(m, c), 1);
  const slots = [0, 1].map(() => {
    const f = new Float32Array(most);
    return { f, enc: new Uint8Array(most * 2) };
  });
  const pending = new Map<number, Promise<Uint8Array>>();
  const prefetch = Math.max(1, options.prefetch ?? 1);
  const startEncoded = (k: number) => {
    if (k >= jobs.length || pending.has(k) || !jobs[k][0].encoded) return;
    const [t, s, c] = jobs[k];
    const p = Promise.resolve(t.encoded!(s, c));
    p.catch(() => undefined); // awaited later; avoid an unhandled rejection if we stop early
    pending.set(k, p);
  };

  const fh = await fsp.open(path, 'w');
  let ok = false;
  let inFlight: Promise<void> | null = null;
  try {
    await writeAll(fh, header, 0);
    let pos = header.length;
    for (let k = 0; k < jobs.length; k++) {
      if (options.signal?.aborted) throw abortError(`writing ${path}`, options.signal);
      for (let a = k; a < k + prefetch; a++) startEncoded(a);
      const [t, s, c] = jobs[k];
      const nb = c * DTYPE_BYTES[t.dtype];
      let bytes: Uint8Array;
      if (t.fill) {
        const slot = slots[k & 1];
        const f = slot.f.subarray(0, c);
        t.fill(s, c, f);
        bytes = t.dtype === 'F32' ? new Uint8Array(f.buffer, 0, nb) : slot.enc.subarray(0, nb);
        if (t.dtype !== 'F32') encodeF32(f, t.dtype, bytes);
      } else {
        bytes = await pending.get(k)!;
        pending.delete(k);
        if (bytes.byteLength !== nb) {
          throw new QwenError('E_BAD_ARG', `tensor "${t.name}": encoded chunk has ${bytes.byteLength} bytes, expected ${nb}`);
        }
      }
      if (inFlight) await inFlight;
      options.onBytes?.(pos - header.length);
      inFlight = writeAll(fh, bytes, pos);
      pos += nb;
    }
    if (inFlight) await inFlight;
    options.onBytes?.(dataBytes);
    ok = true;
    return header.length + dataBytes;
  } finally {
    if (!ok) await (inFlight as Promise<void> | null)?.catch(() => undefined); // never close under a pending write
    await fh.close();
    if (!ok) await fsp.rm(path, { force: true });
  }
}

async function writeAll(fh: fsp.FileHandle, buf: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < buf.byteLength; ) {
    const { bytesWritten } = await fh.write(buf, done, buf.byteLength - done, position + done);
    done += bytesWritten;
  }
}
