/**
 * UTF-8 decoding with Python's `errors="replace"` / `errors="ignore"` semantics. Both Python and WHATWG replace each
 * *maximal subpart* of an ill-formed sequence (Unicode §3.9, Table 3-7) by one U+FFFD, so "replace" is TextDecoder;
 * "ignore" drops exactly those subparts. ignoreBOM: Python's "utf-8" codec keeps a leading U+FEFF.
 */

const replacing = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export type DecodeErrors = 'replace' | 'ignore';

/** Sequence length announced by a lead byte, or 0 if the byte can never start a well-formed sequence. */
function seqLen(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead < 0xc2) return 0; // continuation bytes and the overlong leads C0/C1
  if (lead < 0xe0) return 2;
  if (lead < 0xf0) return 3;
  if (lead < 0xf5) return 4;
  return 0;
}

/** Valid range of the byte after `lead` (Table 3-7 narrows it for E0, ED, F0, F4); later bytes are 80..BF. */
function secondOk(lead: number, b: number): boolean {
  if (lead === 0xe0) return b >= 0xa0 && b <= 0xbf;
  if (lead === 0xed) return b >= 0x80 && b <= 0x9f;
  if (lead === 0xf0) return b >= 0x90 && b <= 0xbf;
  if (lead === 0xf4) return b >= 0x80 && b <= 0x8f;
  return b >= 0x80 && b <= 0xbf;
}

/**
 * Length of the longest prefix of a well-formed sequence starting at bytes[i] (within `end`): equal to seqLen when the
 * character is complete, smaller when it is broken or cut off. 0 for a byte that cannot start a sequence.
 */
function validPrefix(bytes: Uint8Array, i: number, end: number): number {
  const lead = bytes[i];
  const n = seqLen(lead);
  if (n <= 1) return n;
  let k = 1;
  while (k < n && i + k < end) {
    const b = bytes[i + k];
    if (k === 1 ? !secondOk(lead, b) : b < 0x80 || b > 0xbf) break;
    k++;
  }
  return k;
}

export function decodeUtf8(bytes: Uint8Array, errors: DecodeErrors): string {
  if (errors === 'replace') return replacing.decode(bytes);
  try {
    return strict.decode(bytes);
  } catch {
    return replacing.decode(dropIllFormed(bytes));
  }
}

/** The bytes with every maximal ill-formed subpart removed (what Python's "ignore" skips). */
function dropIllFormed(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length);
  let o = 0;
  for (let i = 0; i < bytes.length; ) {
    const n = seqLen(bytes[i]);
    const k = validPrefix(bytes, i, bytes.length);
    if (n > 0 && k === n) for (let j = 0; j < n; j++) out[o++] = bytes[i + j];
    i += Math.max(k, 1); // a broken prefix is one subpart; a byte that cannot start a sequence is one on its own
  }
  return out.subarray(0, o);
}

/**
 * Where a trailing *incomplete but still completable* sequence starts (bytes.length if there is none). Everything
 * before it decodes the same whatever bytes follow: a lead byte (C2..F4) is never a continuation byte, so a decoder
 * always restarts at it.
 */
export function incompleteTail(bytes: Uint8Array): number {
  const len = bytes.length;
  for (let i = len - 1; i >= 0 && i >= len - 3; i--) {
    const b = bytes[i];
    if (b >= 0x80 && b <= 0xbf) continue; // continuation byte: look further back for its lead
    const n = seqLen(b);
    return n > 1 && validPrefix(bytes, i, len) === len - i && len - i < n ? i : len;
  }
  return len;
}
