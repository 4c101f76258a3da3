import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenError } from '../lib/errors';
import {
  DTYPE_BYTES,
  StDType,
  bf16ToF32,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  readSafetensorsHeader,
  writeSafetensors,
} from '../lib/model/safetensors';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-st-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const f32 = (x: number) => Math.fround(x);

describe('scalar conversions', () => {
  test('bf16 decode', () => {
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0xc000)).toBe(-2);
    expect(bf16ToF32(0x7f80)).toBe(Infinity);
    expect(bf16ToF32(0xff80)).toBe(-Infinity);
    expect(bf16ToF32(0x7fc0)).toBeNaN();
    expect(bf16ToF32(0x0001)).toBe(2 ** -133);
    expect(Object.is(bf16ToF32(0x8000), -0)).toBe(true);
  });

  test('bf16 encode rounds to nearest even, overflows to inf, keeps NaN', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even (up)
    expect(f32ToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81); // above the tie
    expect(f32ToBf16(-(1 + 2 ** -8 + 2 ** -20))).toBe(0xbf81);
    expect(f32ToBf16(3.3895313892515355e38)).toBe(0x7f7f); // largest finite bf16
    expect(f32ToBf16(3.4028234663852886e38)).toBe(0x7f80); // max float rounds up to inf
    expect(f32ToBf16(-Infinity)).toBe(0xff80);
    expect(bf16ToF32(f32ToBf16(NaN))).toBeNaN();
  });

  test('bf16 round-trips every non-NaN pattern', () => {
    const bad: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7f80) === 0x7f80 && h & 0x7f) continue;
      if (f32ToBf16(bf16ToF32(h)) !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
  });

  test('f16 edge cases: subnormals, ties, overflow', () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519)).toBe(0x7bff); // below the tie with 65536
    expect(f32ToF16(65520)).toBe(0x7c00); // tie -> even = inf
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e6)).toBe(0xfc00);
    expect(f32ToF16(2 ** -24)).toBe(0x0001);
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie -> even (0)
    expect(f32ToF16(2 ** -25 + 2 ** -40)).toBe(0x0001);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 -> 2
    expect(f32ToF16(2 ** -14)).toBe(0x0400);
    expect(f32ToF16(2 ** -14 - 2 ** -24)).toBe(0x03ff);
    expect(f32ToF16(2 ** -14 - 2 ** -25)).toBe(0x0400); // tie, carries into the smallest normal
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16(1e-10)).toBe(0);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(Infinity)).toBe(0x7c00);
    expect(f16ToF32(f32ToF16(NaN))).toBeNaN();
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x0001)).toBe(2 ** -24);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
  });

  test('f16 round-trips every non-NaN pattern and matches brute-force nearest-even on random floats', () => {
    const finite: number[] = [];
    const bad: Array<[number, number, number]> = [];
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x3ff) continue;
      if (f32ToF16(f16ToF32(h)) !== h) bad.push([h, h, f32ToF16(f16ToF32(h))]);
      if (h < 0x7c00) finite.push(h); // positive finite, ascending value
    }
    let s = 12345;
    const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let n = 0; n < 20000; n++) {
      const x = f32(2 ** (rnd() * 44 - 27) * (1 + rnd())); // 2^-27 .. 2^17, crosses subnormals and overflow
      let lo = 0;
      let hi = finite.length - 1;
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (f16ToF32(finite[mid]) <= x) lo = mid;
        else hi = mid;
      }
      let want: number;
      if (x >= 65520) want = 0x7c00;
      else {
        const a = f16ToF32(finite[lo]);
        const b = f16ToF32(finite[hi]);
        want = x - a < b - x ? finite[lo] : x - a > b - x ? finite[hi] : finite[lo] & 1 ? finite[hi] : finite[lo];
      }
      if (f32ToF16(x) !== want) bad.push([x, want, f32ToF16(x)]);
    }
    // Exact midpoints between neighbours (representable in f32) go to the even pattern.
    for (let i = 0; i + 1 < finite.length; i += 7) {
      const x = (f16ToF32(finite[i]) + f16ToF32(finite[i + 1])) / 2;
      const want = finite[i] & 1 ? finite[i + 1] : finite[i];
      if (f32ToF16(x) !== want || f32ToF16(-x) !== (want | 0x8000)) bad.push([x, want, f32ToF16(x)]);
    }
    expect(bad).toEqual([]);
  });
});

/** Decode the data of one tensor of a file written by us (the reader only parses headers). */
function readValues(file: string, t: { dtype: StDType; offset: number; nbytes: number }): number[] {
  const buf = fs.readFileSync(file).subarray(t.offset, t.offset + t.nbytes);
  const out: number[] = [];
  for (let i = 0; i < t.nbytes / DTYPE_BYTES[t.dtype]; i++) {
    if (t.dtype === 'F32') out.push(buf.readFloatLE(4 * i));
    else if (t.dtype === 'BF16') out.push(bf16ToF32(buf.readUInt16LE(2 * i)));
    else out.push(f16ToF32(buf.readUInt16LE(2 * i)));
  }
  return out;
}

describe('writer + reader round trip', () => {
  const exact = [0, 1, -2, 0.5, 3.25, -1024, 0.0078125, 96];
  test.each(['F32', 'F16', 'BF16'] as StDType[])('%s exact values, chunked, with metadata', async (dtype) => {
    const file = path.join(tmp, `rt-${dtype}.safetensors`);
    const calls: Array<[number, number]> = [];
    const a = (i: number) => exact[i % exact.length] * (i % 3 === 0 ? 1 : -1);
    const size = await writeSafetensors(
      file,
      [
        { name: 'a', dtype, shape: [5, 7], fill: (s, c, out) => { calls.push([s, c]); for (let j = 0; j < c; j++) out[j] = a(s + j); } },
        { name: 'empty', dtype, shape: [0, 4], fill: () => { throw new Error('never called for 0 elements'); } },
        { name: 'b', dtype, shape: [3], encoded: async (s, c) => { const f = new Float32Array(c).fill(1.5); return dtype === 'F32' ? new Uint8Array(f.buffer) : new Uint8Array(new Uint16Array(c).fill(dtype === 'F16' ? 0x3e00 : 0x3fc0).buffer); } },
      ],
      { format: 'pt', note: 'x' },
      { chunkElements: 8, prefetch: 2 },
    );
    expect(fs.statSync(file).size).toBe(size);
    expect(calls).toEqual([[0, 8], [8, 8], [16, 8], [24, 8], [32, 3]]);
    const raw = fs.readFileSync(file);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0); // header padded with spaces to keep data 8-aligned
    expect(raw.toString('utf8', 8, 8 + n).trimEnd().endsWith('}')).toBe(true);

    const { tensors, metadata, fileSize } = await readSafetensorsHeader(file);
    expect(fileSize).toBe(size);
    expect(metadata).toEqual({ format: 'pt', note: 'x' });
    expect([...tensors.keys()]).toEqual(['a', 'empty', 'b']);
    const ta = tensors.get('a')!;
    expect(ta).toEqual({ name: 'a', dtype, shape: [5, 7], offset: 8 + n, nbytes: 35 * DTYPE_BYTES[dtype] });
    expect(tensors.get('empty')!.nbytes).toBe(0);
    expect(tensors.get('b')!.offset).toBe(8 + n + ta.nbytes);
    expect(readValues(file, ta)).toEqual(Array.from({ length: 35 }, (_, i) => a(i)));
    expect(readValues(file, tensors.get('b')!)).toEqual([1.5, 1.5, 1.5]);
  });

  test('rounding on write: BF16 and F16 round to nearest even, F16 overflows to inf', async () => {
    const file = path.join(tmp, 'round.safetensors');
    const vals = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -11, 1 + 2 ** -11 + 2 ** -20, 70000, 2 ** -25, 3 * 2 ** -25];
    const fill = (s: number, c: number, out: Float32Array) => out.set(vals.slice(s, s + c));
    await writeSafetensors(file, [
      { name: 'bf', dtype: 'BF16', shape: [vals.length], fill },
      { name: 'h', dtype: 'F16', shape: [vals.length], fill },
    ], undefined, { chunkElements: 4 });
    const { tensors } = await readSafetensorsHeader(file);
    expect(readValues(file, tensors.get('bf')!).slice(0, 2)).toEqual([1, 1 + 2 ** -6]);
    // f16 holds 1 + 2^-8 exactly; 1 + 2^-11 is a tie (-> 1), a hair above it rounds up; 70000 > 65520 -> inf
    expect(readValues(file, tensors.get('h')!)).toEqual([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1, 1 + 2 ** -10, Infinity, 0, 2 ** -23]);
  });

  test('a failing fill or an abort removes the partial file', async () => {
    const file = path.join(tmp, 'partial.safetensors');
    const boom = (s: number) => { if (s > 0) throw new Error('boom'); };
    await expect(writeSafetensors(file, [{ name: 'x', dtype: 'F32', shape: [100], fill: boom }], undefined, { chunkElements: 10 }))
      .rejects.toThrow('boom');
    expect(fs.existsSync(file)).toBe(false);
    const ac = new AbortController();
    const p = writeSafetensors(file, [{ name: 'x', dtype: 'F32', shape: [100], fill: (s) => { if (s === 30) ac.abort(); } }],
      undefined, { chunkElements: 10, signal: ac.signal });
    await expect(p).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(fs.existsSync(file)).toBe(false);
  });

  test('writer rejects bad tensor lists', async () => {
    const f = path.join(tmp, 'bad-w.safetensors');
    const fill = () => undefined;
    await expect(writeSafetensors(f, [{ name: 'a', dtype: 'F32', shape: [1], fill }, { name: 'a', dtype: 'F32', shape: [1], fill }]))
      .rejects.toMatchObject({ code: 'E_BAD_ARG' });
    await expect(writeSafetensors(f, [{ name: 'a', dtype: 'F64' as StDType, shape: [1], fill }])).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    await expect(writeSafetensors(f, [{ name: 'a', dtype: 'F32', shape: [-1], fill }])).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    await expect(writeSafetensors(f, [{ name: 'a', dtype: 'F32', shape: [1] }])).rejects.toMatchObject({ code: 'E_BAD_ARG' });
  });
});

describe('reader rejects defective files', () => {
  let count = 0;
  /** Write a file: u64 header length (or lenOverride), the header text/bytes, then dataLen zero bytes. */
  function build(header: unknown, dataLen = 0, lenOverride?: bigint): string {
    const file = path.join(tmp, `bad-${count++}.safetensors`);
    const h = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
    fs.writeFileSync(file, Buffer.concat([len, h, Buffer.alloc(dataLen)]));
    return file;
  }
  async function expectBad(file: string, pattern: RegExp, tensor?: string): Promise<string> {
    const err = await readSafetensorsHeader(file).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(QwenError);
    const e = err as QwenError;
    expect(e.code).toBe('E_BAD_CHECKPOINT');
    expect(e.message.startsWith(file)).toBe(true);
    expect(e.message).toMatch(pattern);
    if (tensor) expect(e.message).toContain(`"${tensor}"`);
    return e.message;
  }
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  test('file-level defects', async () => {
    await expectBad(path.join(tmp, 'nope.safetensors'), /not found/);
    const short = path.join(tmp, 'short.safetensors');
    fs.writeFileSync(short, Buffer.alloc(5));
    await expectBad(short, /shorter than/);
    await expectBad(build('', 16, 0n), /header length is 0/);
    await expectBad(build('{}', 0, 1000n), /runs past the end of the file/);
    await expectBad(build('{}', 0, 1n << 40n), /absurdly large/);
    await expectBad(build(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/);
    await expectBad(build('{"a": '), /not valid JSON/);
    await expectBad(build('[1, 2]'), /not a JSON object/);
    await expectBad(build({ __metadata__: { format: 1 } }), /__metadata__/);
    await expectBad(build('{"w": {"dtype":"F32","shape":[2],"data_offsets":[0,8]}, "w": {"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', 16),
      /twice/, 'w');
  });

  test('tensor-level defects name the tensor', async () => {
    await expectBad(build({ w: 5 }), /not an object/, 'w');
    const m = await expectBad(build({ w: { ...ok, dtype: 'F64' } }, 8), /unsupported dtype "F64"/, 'w');
    expect(m).toContain('F32, F16, BF16');
    await expectBad(build({ w: { ...ok, dtype: 'I64' } }, 8), /unsupported dtype/, 'w');
    await expectBad(build({ w: { ...ok, dtype: 'BOOL' } }, 8), /unsupported dtype/, 'w');
    await expectBad(build({ w: { ...ok, dtype: 'Q4_K' } }, 8), /unknown dtype "Q4_K".*F32, F16, BF16/, 'w');
    await expectBad(build({ w: { ...ok, dtype: undefined } }, 8), /dtype/, 'w');
    for (const shape of ['2', [2, -1], [1.5], [2 ** 53]]) await expectBad(build({ w: { ...ok, shape } }, 8), /shape/, 'w');
    for (const offs of [[0], [0, 8, 9], [0, '8'], [-1, 8], null]) {
      await expectBad(build({ w: { ...ok, data_offsets: offs } }, 8), /data_offsets/, 'w');
    }
    await expectBad(build({ w: { ...ok, data_offsets: [8, 0] } }, 8), /inverted/, 'w');
    const hdr = { a: ok, w: { ...ok, data_offsets: [8, 16] } };
    const t = await expectBad(build(hdr, 12), /truncated/, 'w');
    const n = JSON.stringify(hdr).length;
    expect(t).toContain(`expected at least ${8 + n + 16} bytes, actual ${8 + n + 12}`);
    const o = await expectBad(build({ a: { ...ok, shape: [3], data_offsets: [0, 12] }, w: { ...ok, data_offsets: [8, 16] } }, 16), /overlaps/, 'w');
    expect(o).toContain('"a"');
    await expectBad(build({ w: { ...ok, shape: [3] } }, 8), /needs 12/, 'w');
  });

  test('valid edge cases pass: zero-size tensor, empty data, unsorted offsets', async () => {
    const f = build({ __metadata__: { k: 'v' }, z: { dtype: 'BF16', shape: [0], data_offsets: [4, 4] }, b: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] }, a: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, 8);
    const { tensors, metadata } = await readSafetensorsHeader(f);
    expect(metadata).toEqual({ k: 'v' });
    expect([...tensors.keys()].sort()).toEqual(['a', 'b', 'z']);
  });
});
