/**
 * Tokenizer parity with QWenTokenizer: golden ids (shared/qwen/tokenizer-golden.json, made with the real tiktoken core),
 * §5.3 special-token semantics, §5.4 decode, vocabulary loading/validation, and round trips of random Unicode.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenError } from '../lib/errors';
import { Tokenizer, PAT_STR, SPECIAL_TOKENS, VOCAB_SIZE } from '../lib/tokenizer';
import { SHARED_QWEN } from './helpers/fixtures';
import { mulberry32 } from './helpers/weights';

const SHARED = SHARED_QWEN;
const TIKTOKEN_FILE = path.join(SHARED, 'qwen.tiktoken');

interface Golden {
  encode_cases: { text: string; allowed_special: 'all' | 'none'; ids: number[] }[];
}
const golden: Golden = JSON.parse(fs.readFileSync(path.join(SHARED, 'tokenizer-golden.json'), 'utf8'));

const rng = mulberry32;

/** Random text drawn from the scripts and edge classes the pre-tokenizer treats differently. */
const RANGES: [number, number][] = [
  [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x30, 0x39], [0x09, 0x0d], [0xa0, 0xff], [0x300, 0x36f], [0x391, 0x3c9],
  [0x410, 0x44f], [0x600, 0x6ff], [0x900, 0x97f], [0xe00, 0xe5b], [0x1100, 0x1112], [0x1161, 0x1175], [0x2000, 0x206f],
  [0x2460, 0x24ff], [0x3000, 0x303f], [0x3040, 0x30ff], [0x4e00, 0x9fff], [0x4e00, 0x9fff], [0xac00, 0xd7a3],
  [0xfe00, 0xfe0f], [0xfeff, 0xfeff], [0xff01, 0xff5e], [0x1f300, 0x1f64f], [0x1f3fb, 0x1f3ff], [0x200d, 0x200d],
  [0x10000, 0x1004f], [0x1d400, 0x1d7ff], [0x20000, 0x2a6df], [0x85, 0x85], [0x1c, 0x1f],
];
const EXTRAS = ["'s", "'LL", "'ſt", '\r\n', '\n\n', '   ', '<|endoftext|>', '<|im_start|>', '<|extra_0|>', '<|extra_205|>', '<|', '|>'];
function randomText(r: () => number, maxLen: number): string {
  let s = '';
  const n = Math.floor(r() * maxLen) + 1;
  for (let i = 0; i < n; i++) {
    if (r() < 0.08) {
      s += EXTRAS[Math.floor(r() * EXTRAS.length)];
      continue;
    }
    const [lo, hi] = RANGES[Math.floor(r() * RANGES.length)];
    s += String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)));
  }
  return s;
}

function expectQwenError(fn: () => unknown, code: string, ...fragments: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(QwenError);
  expect((err as QwenError).code).toBe(code);
  for (const f of fragments) expect((err as Error).message).toMatch(f);
}

let tok: Tokenizer;
let bundled: Tokenizer;
beforeAll(async () => {
  let t = performance.now();
  tok = await Tokenizer.fromFile(TIKTOKEN_FILE);
  const fileMs = performance.now() - t;
  t = performance.now();
  bundled = await Tokenizer.bundled();
  console.log(`vocab load (cold, in jest): file ${fileMs.toFixed(0)} ms, bundled ${(performance.now() - t).toFixed(0)} ms`);
});

describe('golden encode cases', () => {
  test.each(golden.encode_cases.map((c, i) => [i, c.allowed_special, JSON.stringify(c.text).slice(0, 50), c] as const))(
    '#%i (%s) %s',
    (_i, _mode, _label, c) => {
      expect(tok.encode(c.text, { allowedSpecial: c.allowed_special })).toEqual(c.ids);
      expect(bundled.encode(c.text, { allowedSpecial: c.allowed_special })).toEqual(c.ids);
      expect(tok.decode(c.ids)).toBe(c.text.normalize('NFC'));
    },
  );

  test('the default is allowedSpecial "all"', () => {
    expect(tok.encode('print("<|endoftext|>")')).toEqual([1350, 445, 151643, 899]);
  });

  test('§5.4 reference ids', () => {
    const ref: [string, number[]][] = [
      ['\n', [198]], ['\n\n', [271]], [' \n', [715]], ['system', [8948]], ['user', [872]], ['assistant', [77091]],
      ['Human:', [33975, 25]], ['You are a helpful assistant.', [2610, 525, 264, 10950, 17847, 13]], ['你好', [108386]],
      ['Panda', [47, 9817]], [' Panda', [72410]], ['12345', [16, 17, 18, 19, 20]],
    ];
    for (const [text, ids] of ref) expect([text, tok.encode(text)]).toEqual([text, ids]);
  });

  test('never adds BOS/EOS; empty text is []', () => {
    expect(tok.encode('')).toEqual([]);
    expect(tok.decode([])).toBe('');
  });
});

describe('special tokens in text (§5.3)', () => {
  const text = 'print("<|extra_0|>")<|endoftext|>';

  test('an allowed subset parses only those', () => {
    expect(tok.encode(text, { allowedSpecial: ['<|endoftext|>'] })).toEqual([1350, 9639, 91, 15460, 62, 15, 91, 82598, 151643]);
  });

  test('unknown forms such as <|extra_205|> are always text', () => {
    expect(tok.encode('<|extra_205|>')).toEqual(tok.encode('<|extra_205|>', { allowedSpecial: 'none' }));
    expect(tok.encode('<|extra_205|>')).not.toContain(151850);
  });

  test('disallowedSpecial "all" raises on any special that is not allowed, naming it (leftmost)', () => {
    expectQwenError(() => tok.encode(text, { allowedSpecial: 'none', disallowedSpecial: 'all' }), 'E_BAD_ARG', '<|extra_0|>', 'disallowedSpecial');
    expectQwenError(
      () => tok.encode(text, { allowedSpecial: ['<|extra_0|>'], disallowedSpecial: 'all' }),
      'E_BAD_ARG',
      '<|endoftext|>',
    );
    expect(tok.encode(text, { allowedSpecial: 'all', disallowedSpecial: 'all' })).toEqual([1350, 445, 151646, 899, 151643]);
    expect(tok.encode('no specials', { allowedSpecial: 'none', disallowedSpecial: 'all' })).toEqual(tok.encode('no specials'));
  });

  test('an explicit disallowed list is checked even for allowed tokens (tiktoken semantics)', () => {
    expectQwenError(() => tok.encode(text, { disallowedSpecial: ['<|endoftext|>'] }), 'E_BAD_ARG', '<|endoftext|>');
    expect(tok.encode('<|im_end|>', { disallowedSpecial: ['<|endoftext|>'] })).toEqual([151645]);
  });

  test('the disallowed check sees the NFC text', () => {
    // U+FF5C FULLWIDTH VERTICAL LINE has no canonical decomposition, so it stays text; plain "<|" composes nothing.
    expect(() => tok.encode('<\uff5cendoftext\uff5c>', { allowedSpecial: 'none', disallowedSpecial: 'all' })).not.toThrow();
  });

  test('bad options are E_BAD_ARG naming the parameter', () => {
    expectQwenError(() => tok.encode('x', { allowedSpecial: ['<|nope|>'] }), 'E_BAD_ARG', 'allowedSpecial[0]');
    expectQwenError(() => tok.encode('x', { disallowedSpecial: ['<|im_end|>', 'x'] }), 'E_BAD_ARG', 'disallowedSpecial[1]');
    expectQwenError(() => tok.encode('x', { allowedSpecial: 'some' as never }), 'E_BAD_ARG', 'allowedSpecial');
    expectQwenError(() => tok.encode(42 as never), 'E_BAD_ARG', 'text');
  });
});

describe('decode (§5.4)', () => {
  test('partial characters: replace vs ignore', () => {
    expect(tok.decode([51461])).toBe(' \ufffd');
    expect(tok.decode([51461, 117])).toBe(' 根');
    expect(tok.decode([51461], { errors: 'ignore' })).toBe(' ');
    expect(tok.decode([51461, 117], { errors: 'ignore' })).toBe(' 根');
    expect(Array.from(tok.decodeBytes([51461]))).toEqual([0x20, 0xe6, 0xa0]);
  });

  test('maximal-subpart replacement like Python (one U+FFFD per subpart)', () => {
    const byteId = (b: number) => tok.tokenToId(Uint8Array.of(b));
    // ED A0 80 (a UTF-16 surrogate) = 3 subparts; E6 A0 41 = 1 subpart + "A"; F0 9F 98 + "!" = 1 subpart.
    expect(tok.decode([0xed, 0xa0, 0x80].map(byteId))).toBe('\ufffd\ufffd\ufffd');
    expect(tok.decode([0xe6, 0xa0, 0x41].map(byteId))).toBe('\ufffdA');
    expect(tok.decode([0xf0, 0x9f, 0x98, 0x21].map(byteId))).toBe('\ufffd!');
    expect(tok.decode([0xf0, 0x9f, 0x98, 0x21].map(byteId), { errors: 'ignore' })).toBe('!');
    expect(tok.decode([0xc0, 0xaf, 0x41].map(byteId), { errors: 'ignore' })).toBe('A');
  });

  test('specials decode to their surface form, or are dropped (joining the bytes around them)', () => {
    const ids = [51461, 151645, 117];
    expect(tok.decode(ids)).toBe(' \ufffd<|im_end|>\ufffd'); // 117 is the lone byte B9
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(' 根');
    expect(tok.decode([151850])).toBe('<|extra_204|>');
  });

  test('a leading U+FEFF is kept (Python utf-8, not utf-8-sig)', () => {
    expect(tok.decode(tok.encode('\ufeffhi'))).toBe('\ufeffhi');
  });

  test('ids outside 0..151850 are E_BAD_ARG naming the id and the range', () => {
    expectQwenError(() => tok.decode([1, 151851]), 'E_BAD_ARG', 'ids[1]', '151851', '0..151850', 'padding');
    expectQwenError(() => tok.decode([151935]), 'E_BAD_ARG', 'padding');
    expectQwenError(() => tok.decode([151936]), 'E_BAD_ARG', '0..151850');
    expectQwenError(() => tok.decode([-1]), 'E_BAD_ARG', 'ids[0]');
    expectQwenError(() => tok.decode([1.5]), 'E_BAD_ARG', 'ids[0]');
    expectQwenError(() => tok.decode([NaN]), 'E_BAD_ARG', 'ids[0]');
    expectQwenError(() => tok.decode(['5'] as never), 'E_BAD_ARG', 'ids[0]');
    expectQwenError(() => tok.decode(null as never), 'E_BAD_ARG', 'ids');
    expectQwenError(() => tok.decode([1], { errors: 'strict' as never }), 'E_BAD_ARG', 'errors');
  });

  test('typed arrays are accepted', () => {
    expect(tok.decode(Uint32Array.of(108386))).toBe('你好');
    expect(tok.decode(Int32Array.of(9707, 1879))).toBe('Hello world');
  });
});

describe('round trips of arbitrary Unicode', () => {
  test('decode(encode(s)) === NFC(s), both special modes (2000 random strings)', () => {
    const r = rng(1234);
    for (let k = 0; k < 2000; k++) {
      const s = randomText(r, 40);
      for (const mode of ['all', 'none'] as const) {
        const ids = tok.encode(s, { allowedSpecial: mode });
        expect({ s, mode, out: tok.decode(ids) }).toEqual({ s, mode, out: s.normalize('NFC') });
      }
    }
  });

  test('lone surrogates encode as U+FFFD (tiktoken\'s surrogatepass → replace fallback)', () => {
    expect(tok.encode('a\ud800b')).toEqual(tok.encode('a\ufffdb'));
    expect(tok.decode(tok.encode('x\udfff'))).toBe('x\ufffd');
  });

  test('NFC before encoding: NFD and NFC input give the same ids', () => {
    const nfd = 'e\u0301 cafe\u0301 Å ḱ 가';
    expect(tok.encode(nfd)).toEqual(tok.encode(nfd.normalize('NFC')));
    expect(tok.decode(tok.encode(nfd))).toBe(nfd.normalize('NFC'));
  });
});

describe('pre-tokenizer exactness (§5.2)', () => {
  // An independent oracle: the corrected JS port of PAT_STR from §5.2 (Unicode White_Space for \s; (?i:'s) also
  // matches 'ſ by simple case folding, as the Rust regex does). BPE runs per piece, so the core splits like the
  // oracle iff encoding the oracle's pieces one by one gives the same ids.
  const WS = '\\t\\n\\v\\f\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000';
  const oracle = new RegExp(
    `'(?:[sSſ]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^${WS}\\p{L}\\p{N}]+[\\r\\n]*|[${WS}]*[\\r\\n]+|[${WS}]+(?![^${WS}])|[${WS}]+`,
    'gu',
  );
  const naive = new RegExp(PAT_STR.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "'(?:[sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])"), 'gu');
  const byPieces = (s: string, re: RegExp) => (s.match(re) ?? []).flatMap((p) => tok.encode(p, { allowedSpecial: 'none' }));

  test('the core splits exactly like the corrected regex on 3000 random strings', () => {
    const r = rng(99);
    for (let k = 0; k < 3000; k++) {
      const s = randomText(r, 24).normalize('NFC');
      expect({ s, ids: byPieces(s, oracle) }).toEqual({ s, ids: tok.encode(s, { allowedSpecial: 'none' }) });
    }
  });

  test('digits, whitespace runs, CJK and code edge cases', () => {
    for (const s of ['hello \ufeffworld', 'a\u0085b', 'x  \n\ny', '1²①٣Ⅻ', '  \t x', 'x   ', "it'ſt", '中文，标点！ok', 'a\u3000\u3000b']) {
      expect({ s, ids: byPieces(s, oracle) }).toEqual({ s, ids: tok.encode(s, { allowedSpecial: 'none' }) });
    }
    // The naive JS port (JS \s includes U+FEFF) mis-splits this one; the core does not.
    expect(byPieces('hello \ufeffworld', naive)).not.toEqual(tok.encode('hello \ufeffworld'));
  });
});

describe('vocabulary', () => {
  test('bundled ranks equal qwen.tiktoken byte for byte (ids 0..151642)', () => {
    const lines = fs.readFileSync(TIKTOKEN_FILE, 'utf8').split('\n').filter(Boolean);
    expect(lines.length).toBe(151643);
    for (const line of lines) {
      const [b64, rank] = line.split(' ');
      const expected = Buffer.from(b64, 'base64');
      const id = Number(rank);
      const a = tok.idToToken(id) as Uint8Array;
      const b = bundled.idToToken(id) as Uint8Array;
      if (!expected.equals(a) || !expected.equals(b)) throw new Error(`rank ${id} differs`);
    }
  });

  test('bundled encode == file encode on the golden texts and random text', () => {
    for (const c of golden.encode_cases) expect(bundled.encode(c.text)).toEqual(tok.encode(c.text));
    const r = rng(7);
    for (let k = 0; k < 200; k++) {
      const s = randomText(r, 60);
      expect(bundled.encode(s)).toEqual(tok.encode(s));
    }
  });

  test('ids, specials and lookups', () => {
    expect(tok.vocabSize).toBe(151851);
    expect(VOCAB_SIZE).toBe(151851);
    expect(tok.specialIds).toEqual({ endoftext: 151643, imStart: 151644, imEnd: 151645 });
    expect(SPECIAL_TOKENS.length).toBe(208);
    expect(tok.tokenToId('<|endoftext|>')).toBe(151643);
    expect(tok.tokenToId('<|extra_204|>')).toBe(151850);
    expect(tok.idToToken(151646)).toBe('<|extra_0|>');
    expect(Array.from(tok.idToToken(198) as Uint8Array)).toEqual([10]);
    expect(tok.tokenToId(Uint8Array.of(10))).toBe(198);
    expect(tok.tokenToId(Buffer.from(' Panda'))).toBe(72410);
    expect(tok.idToToken(0)).toEqual(Uint8Array.of(0x21)); // ranks 0..255 in bytes_to_unicode order
    expect(tok.tokenToId(Uint8Array.of(0x00))).toBe(188);
    expect(tok.isSpecial(151643)).toBe(true);
    expect(tok.isSpecial(151850)).toBe(true);
    expect(tok.isSpecial(151642)).toBe(false);
    expect(tok.isSpecial(151851)).toBe(false);
    expectQwenError(() => tok.tokenToId('<|extra_205|>'), 'E_BAD_ARG', 'not a special token');
    expectQwenError(() => tok.tokenToId(Uint8Array.of(0xff, 0xfe, 0xfd, 0xfc, 0xfb)), 'E_BAD_ARG', 'not a BPE token');
    expectQwenError(() => tok.idToToken(151851), 'E_BAD_ARG', 'id');
    // idToToken returns a copy: mutating it does not corrupt the vocabulary.
    (tok.idToToken(198) as Uint8Array)[0] = 0x41;
    expect(tok.decode([198])).toBe('\n');
  });

  test('fromDirectory: dir/qwen.tiktoken if present, else the bundled vocabulary', async () => {
    const withFile = await Tokenizer.fromDirectory(SHARED);
    expect(withFile.source).toBe(TIKTOKEN_FILE);
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-tok-'));
    const fallback = await Tokenizer.fromDirectory(empty);
    expect(fallback.source).toBe('bundled');
    expect(fallback.encode('你好')).toEqual([108386]);
    await expect(Tokenizer.fromDirectory(path.join(empty, 'missing'))).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    fs.rmSync(empty, { recursive: true });
  });

  test('the parsed vocabulary and WASM core are cached per source', async () => {
    const t = performance.now();
    const again = await Tokenizer.fromFile(TIKTOKEN_FILE);
    const warm = performance.now() - t;
    console.log(`vocab load (cached): ${warm.toFixed(1)} ms`);
    expect(warm).toBeLessThan(100);
    expect(again.encode('Hello world')).toEqual([9707, 1879]);
  });

  test('free() releases only this tokenizer; the shared core lives on for the others', async () => {
    const a = await Tokenizer.fromFile(TIKTOKEN_FILE);
    a.free();
    a.free(); // idempotent
    expectQwenError(() => a.encode('x'), 'E_DISPOSED');
    expect(tok.encode('Hello world')).toEqual([9707, 1879]);
    const b = await Tokenizer.bundled();
    b.free();
    expect(bundled.encode('Hello world')).toEqual([9707, 1879]);
  });

  describe('malformed qwen.tiktoken → E_BAD_CHECKPOINT naming the file', () => {
    const good = fs.readFileSync(TIKTOKEN_FILE, 'latin1').split('\n').filter(Boolean);
    let dir: string;
    beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen-tok-'))));
    afterAll(() => fs.rmSync(dir, { recursive: true }));
    const load = (name: string, lines: string[]) => {
      const file = path.join(dir, name);
      fs.writeFileSync(file, lines.join('\n') + '\n');
      return Tokenizer.fromFile(file);
    };
    const cases: [string, (l: string[]) => string[], RegExp][] = [
      ['malformed', (l) => [...l.slice(0, 2), 'not-a-line', ...l.slice(2)], /malformed\.tiktoken:3: malformed line/],
      ['gap', (l) => [...l.slice(0, 100), ...l.slice(101)], /not contiguous.*first missing rank 100/],
      ['short', (l) => l.slice(0, 1000), /not contiguous.*1000 ranks/],
      ['duprank', (l) => [...l.slice(0, 5), l[4], ...l.slice(5)], /duprank\.tiktoken:6: duplicate rank 4/],
      ['dupbytes', (l) => [...l.slice(0, 5), `${l[3].split(' ')[0]} 5`, ...l.slice(6)], /same bytes as rank 3/],
      ['badb64', (l) => [...l.slice(0, 5), 'IR== 5', ...l.slice(6)], /invalid base64/], // 'IR==' has non-zero pad bits
      ['range', (l) => [...l, 'IQID 151643'], /rank 151643 out of range/],
    ];
    test.each(cases)('%s', async (name, edit, why) => {
      const p = load(`${name}.tiktoken`, edit(good));
      await expect(p).rejects.toMatchObject({ code: 'E_BAD_CHECKPOINT', message: expect.stringMatching(why) });
      await expect(p).rejects.toThrow(path.join(dir, name));
    });
    test('CRLF line endings and blank lines are accepted', async () => {
      const file = path.join(dir, 'crlf.tiktoken');
      fs.writeFileSync(file, '\r\n' + good.join('\r\n') + '\r\n\r\n');
      const t = await Tokenizer.fromFile(file);
      expect(t.encode('Hello world')).toEqual([9707, 1879]);
      t.free();
    });
    test('a missing file', async () => {
      await expect(Tokenizer.fromFile(path.join(dir, 'nope'))).rejects.toMatchObject({ code: 'E_BAD_CHECKPOINT', message: expect.stringContaining('nope') });
      await expect(Tokenizer.fromFile('' as never)).rejects.toMatchObject({ code: 'E_BAD_ARG' });
    });
  });
});

describe('encodeAsync', () => {
  test('equals encode() for random texts cut into tiny chunks (specials allowed and not)', async () => {
    const r = rng(42);
    for (let k = 0; k < 400; k++) {
      const s = randomText(r, 120);
      const chunkSize = 1 + Math.floor(r() * 30);
      for (const mode of ['all', 'none'] as const) {
        const sync = tok.encode(s, { allowedSpecial: mode });
        expect({ s, chunkSize, mode, ids: await tok.encodeAsync(s, { allowedSpecial: mode, chunkSize }) }).toEqual({ s, chunkSize, mode, ids: sync });
      }
    }
  });

  test('cuts never split a special or change the pieces around digits, letters, newlines', async () => {
    const s = 'ab<|extra_10|>cd<|endoftext|>12\n\nx  \ny 3 中文，好<|im_start|>user\nhi<|im_end|>';
    for (let chunkSize = 1; chunkSize < s.length; chunkSize++) {
      expect(await tok.encodeAsync(s, { chunkSize })).toEqual(tok.encode(s));
      expect(await tok.encodeAsync(s, { chunkSize, allowedSpecial: ['<|extra_10|>'] })).toEqual(
        tok.encode(s, { allowedSpecial: ['<|extra_10|>'] }),
      );
    }
  });

  test('a 1 MB mixed text: same ids, and the event loop keeps turning', async () => {
    const parts = ['Hello world, this is a test of the tokenizer. ', '你好，世界！今天天气很好。', 'def f(x):\n    return x**2  # comment\n', '3.14159 2024-01-01\n', 'Ελληνικά кириллица 😀👍🏽\n'];
    const r = rng(5);
    let s = '';
    while (s.length < 1 << 20) s += parts[Math.floor(r() * parts.length)];
    let t = performance.now();
    const sync = tok.encode(s);
    const syncMs = performance.now() - t;
    let ticks = 0;
    let maxGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 1);
    t = performance.now();
    const ids = await tok.encodeAsync(s);
    const asyncMs = performance.now() - t;
    clearInterval(timer);
    expect(ids).toEqual(sync);
    expect(ticks).toBeGreaterThan(3);
    const mb = Buffer.byteLength(s) / 1e6;
    console.log(
      `encode ${mb.toFixed(2)} MB: sync ${syncMs.toFixed(0)} ms (${(mb / (syncMs / 1000)).toFixed(1)} MB/s, blocks the loop); ` +
        `encodeAsync ${asyncMs.toFixed(0)} ms, ${ticks} timer ticks, longest gap ${maxGap.toFixed(1)} ms`,
    );
  });

  test('bad chunkSize', async () => {
    await expect(tok.encodeAsync('x', { chunkSize: 0 })).rejects.toMatchObject({ code: 'E_BAD_ARG', message: expect.stringContaining('chunkSize') });
  });
});
