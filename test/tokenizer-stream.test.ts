/**
 * Streaming detokenization: the concatenation of push() results and flush() must equal decode(allIds) for any id
 * sequence and any way of cutting it into pushes, while push() never emits half a character.
 */
import * as fs from 'fs';
import * as path from 'path';
import { QwenError } from '../lib/errors';
import { Tokenizer } from '../lib/tokenizer';
import { SHARED_QWEN } from './helpers/fixtures';
import { mulberry32 } from './helpers/weights';

const SHARED = SHARED_QWEN;

const rng = mulberry32;

let tok: Tokenizer;
/** Ids likely to split or break characters: every single-byte token 0x80..0xFF, pieces of CJK/emoji, specials. */
let pool: number[];
beforeAll(async () => {
  tok = await Tokenizer.fromFile(path.join(SHARED, 'qwen.tiktoken'));
  const bytes = Array.from({ length: 256 }, (_, b) => tok.tokenToId(Uint8Array.of(b)));
  const text = tok.encode('你好，世界！根据 😀👍🏽🇨🇳 Ελληνικά é ñ 𝔘𝔫𝔦 \ufeff𠀀 ok\n');
  pool = [...bytes.slice(0x80), ...bytes.slice(0xc0), ...bytes.slice(0xe0, 0xf8), ...text, ...text, 51461, 117, 151643, 151644, 151645, 151646, 151850];
});

function streamAll(ids: number[], cuts: number[], skipSpecialTokens: boolean): { out: string; pushes: string[] } {
  const d = tok.createStreamDecoder({ skipSpecialTokens });
  const pushes: string[] = [];
  let at = 0;
  for (const c of [...cuts, ids.length]) {
    pushes.push(d.push(ids.slice(at, c)));
    at = c;
  }
  pushes.push(d.flush());
  return { out: pushes.join(''), pushes };
}

test('holds back an incomplete character until it completes', () => {
  const d = tok.createStreamDecoder();
  expect(d.push([51461])).toBe(' '); // bytes 20 E6 A0: E6 A0 may still become 根
  expect(d.push([117])).toBe('根');
  expect(d.push([51461])).toBe(' ');
  expect(d.flush()).toBe('\ufffd'); // what decode([51461]) gives at the end
  expect(d.push([108386])).toBe('你好'); // reusable after flush
  expect(d.flush()).toBe('');
});

test('bytes that can never complete are replaced at once, as decode would', () => {
  const b = (x: number) => tok.tokenToId(Uint8Array.of(x));
  const d = tok.createStreamDecoder();
  expect(d.push([b(0xed), b(0xa0)])).toBe('\ufffd\ufffd'); // ED A0 is a surrogate: never valid
  expect(d.push([b(0xe6)])).toBe('');
  expect(d.push([b(0x41)])).toBe('\ufffdA');
  expect(d.push([b(0xf0), b(0x9f), b(0x98)])).toBe('');
  expect(d.push([b(0x80)])).toBe('😀');
});

test('a special token breaks a pending character unless specials are skipped', () => {
  const ids = [51461, 151645, 117];
  expect(streamAll(ids, [1, 2], false).out).toBe(tok.decode(ids));
  expect(streamAll(ids, [1, 2], true).out).toBe(tok.decode(ids, { skipSpecialTokens: true }));
  expect(streamAll(ids, [1, 2], true).pushes).toEqual([' ', '', '根', '']);
});

test('property: pushes + flush == decode(all ids), for random ids and random cuts (3000 cases)', () => {
  const r = rng(2024);
  for (let k = 0; k < 3000; k++) {
    const n = Math.floor(r() * 24);
    const ids = Array.from({ length: n }, () => (r() < 0.85 ? pool[Math.floor(r() * pool.length)] : Math.floor(r() * 151851)));
    const cuts = Array.from({ length: Math.floor(r() * 6) }, () => Math.floor(r() * (n + 1))).sort((a, b) => a - b);
    for (const skip of [false, true]) {
      const { out } = streamAll(ids, cuts, skip);
      const whole = tok.decode(ids, { skipSpecialTokens: skip });
      expect({ ids, cuts, skip, out }).toEqual({ ids, cuts, skip, out: whole });
    }
  }
});

test('streaming the ids of real text yields exactly the text, never a U+FFFD', () => {
  const text = '根据你的要求，我写了一个故事。😀👍🏽🇨🇳 Emoji and 中文 mixed.';
  const ids = tok.encode(text);
  const d = tok.createStreamDecoder();
  let out = '';
  for (const id of ids) {
    const piece = d.push([id]);
    expect(piece).not.toContain('\ufffd');
    out += piece;
  }
  expect(out + d.flush()).toBe(text);
});

test('bad ids throw E_BAD_ARG and leave the decoder unchanged', () => {
  const d = tok.createStreamDecoder();
  expect(d.push([51461])).toBe(' ');
  expect(() => d.push([151851])).toThrow(QwenError);
  expect(() => d.push([-1])).toThrow(/ids\[0\]/);
  expect(d.push([117])).toBe('根');
});
