import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { QwenError } from '../lib/errors';
import { type GenerationCallOptions, defaults, fromFile, fromJSON, resolve } from '../lib/generation/config';

// The shared reference files (shared/qwen/*.generation_config.json, reference §6.1), inlined so the test also runs on
// a checkout without shared/; where shared/ exists, the files are checked to be exactly these.
const FILES: Record<string, Record<string, unknown>> = {
  'Qwen-7B.generation_config.json': {
    chat_format: 'raw',
    eos_token_id: 151643,
    pad_token_id: 151643,
    stop_words_ids: [[151643]],
    max_new_tokens: 512,
    do_sample: true,
    top_k: 0,
    top_p: 0.8,
    transformers_version: '4.31.0',
  },
  'Qwen-7B-Chat.v1-2023-08.generation_config.json': {
    chat_format: 'chatml',
    decay_bound: 0.0,
    decay_factor: 1.0,
    eos_token_id: 151643,
    factual_nucleus_sampling: false,
    max_context_size: 1024,
    max_generate_size: 512,
    max_new_tokens: 512,
    pad_token_id: 151643,
    stop_words_ids: [[151643]],
    do_sample: true,
    top_k: 0,
    top_p: 0.8,
    transformers_version: '4.31.0',
  },
  'Qwen-1_8B-Chat.generation_config.json': {
    chat_format: 'chatml',
    do_sample: true,
    eos_token_id: 151643,
    max_new_tokens: 512,
    max_window_size: 6144,
    pad_token_id: 151643,
    repetition_penalty: 1.1,
    top_k: 0,
    top_p: 0.8,
    transformers_version: '4.37.2',
  },
};

const SHARED = [
  process.env.QWEN_SHARED_DIR,
  path.resolve(__dirname, '../../shared'),
  path.resolve(__dirname, '../shared'),
]
  .filter((d): d is string => !!d)
  .map((d) => path.join(d, 'qwen'))
  .find((d) => fs.existsSync(path.join(d, 'Qwen-7B.generation_config.json')));

const COMMON = {
  eosTokenId: 151643,
  padTokenId: 151643,
  maxNewTokens: 512,
  doSample: true,
  topK: 0,
  topP: 0.8,
  temperature: 1,
};
const EXPECTED: Record<string, object> = {
  'Qwen-7B.generation_config.json': { ...COMMON, chatFormat: 'raw', stopWordsIds: [[151643]], repetitionPenalty: 1 },
  'Qwen-7B-Chat.v1-2023-08.generation_config.json': {
    ...COMMON,
    chatFormat: 'chatml',
    stopWordsIds: [[151643]],
    repetitionPenalty: 1,
  },
  'Qwen-1_8B-Chat.generation_config.json': {
    ...COMMON,
    chatFormat: 'chatml',
    stopWordsIds: [[151643]],
    repetitionPenalty: 1.1,
    maxWindowSize: 6144,
  },
};
const KNOWN = Object.keys(defaults()).concat(['seed', 'logprobs']);
const CTX = { contextLimit: 8192, promptLength: 20 };

function errorOf(fn: () => unknown): QwenError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(QwenError);
    return e as QwenError;
  }
  throw new Error('expected a throw');
}

describe.each(Object.keys(FILES))('%s', (name) => {
  test('parses to the §6.1 values; dead and unknown keys are dropped', () => {
    const cfg = fromJSON(FILES[name], name);
    expect(cfg).toMatchObject(EXPECTED[name]);
    for (const key of Object.keys(cfg)) expect(KNOWN).toContain(key);
    expect(cfg.maxWindowSize).toBe(6144); // from the file or the default
  });
  (SHARED ? test : test.skip)('the shared file is exactly this content, and fromFile reads it', () => {
    const file = path.join(SHARED!, name);
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual(FILES[name]);
    expect(fromFile(file)).toEqual(fromJSON(FILES[name]));
  });
});

describe('file errors', () => {
  test('bad values name the file and the key (E_BAD_CHECKPOINT)', () => {
    const e = errorOf(() => fromJSON({ top_p: 2 }, 'x/generation_config.json'));
    expect(e.code).toBe('E_BAD_CHECKPOINT');
    expect(e.message).toBe('x/generation_config.json: top_p must be a number in (0, 1] (got 2)');
    expect(errorOf(() => fromJSON({ stop_words_ids: [[151643], []] })).message).toMatch(/stop_words_ids\[1\]/);
    expect(errorOf(() => fromJSON([])).code).toBe('E_BAD_CHECKPOINT');
  });
  test('null counts as absent; eos may be a list', () => {
    expect(fromJSON({ temperature: null, eos_token_id: [151643, 151645] })).toMatchObject({
      temperature: 1,
      eosTokenId: [151643, 151645],
    });
  });
  test('a missing or unparsable file is E_BAD_CHECKPOINT naming the path', () => {
    expect(errorOf(() => fromFile('/nonexistent/generation_config.json')).message).toMatch(
      '/nonexistent/generation_config.json',
    );
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gencfg-'));
    const bad = path.join(dir, 'generation_config.json');
    fs.writeFileSync(bad, '{ not json');
    const e = errorOf(() => fromFile(bad));
    expect(e.code).toBe('E_BAD_CHECKPOINT');
    expect(e.message).toMatch('invalid JSON');
    fs.rmSync(dir, { recursive: true });
  });
});

describe('resolve', () => {
  test('defaults < file < call; undefined call values do not override', () => {
    const file = fromJSON({ top_p: 0.5, repetition_penalty: 1.2, top_k: 7 });
    const r = resolve(file, { topP: 0.9, topK: undefined, seed: 5 }, CTX);
    expect(r).toMatchObject({ topP: 0.9, repetitionPenalty: 1.2, topK: 7, temperature: 1, maxNewTokens: 512, seed: 5 });
    const { eosTokenId, ...rest } = COMMON;
    expect(resolve(undefined, undefined, CTX)).toMatchObject({
      ...rest,
      eosTokenIds: [eosTokenId],
      repetitionPenalty: 1,
      chatFormat: 'chatml',
    });
    expect(resolve(undefined, { stopWordsIds: [[151645], [151644]] }, CTX).stopWordsIds).toEqual([[151645], [151644]]);
  });
  test('the result is frozen, eos is a list, the seed is always set', () => {
    const r = resolve(undefined, { eosTokenId: 151643 }, CTX);
    expect(Object.isFrozen(r)).toBe(true);
    expect(Object.isFrozen(r.stopWordsIds) && Object.isFrozen(r.stopWordsIds[0]) && Object.isFrozen(r.stop)).toBe(true);
    expect(() => {
      (r as { topP: number }).topP = 0.1;
    }).toThrow(TypeError);
    expect(r.eosTokenIds).toEqual([151643]);
    expect(Number.isSafeInteger(r.seed)).toBe(true);
    expect(resolve(undefined, {}, CTX).seed).not.toBe(r.seed);
    expect('logprobs' in r).toBe(false);
    expect(resolve(undefined, { logprobs: 0 }, CTX).logprobs).toBe(0);
  });
  test('temperature 0 (greedy) and topP 1 are allowed', () => {
    expect(resolve(undefined, { temperature: 0, topP: 1 }, CTX)).toMatchObject({ temperature: 0, topP: 1 });
  });

  // Every rejected value: the message names the field and the allowed range.
  const BAD: [string, unknown, string][] = [
    ['topP', 0, '(0, 1]'],
    ['topP', 1.5, '(0, 1]'],
    ['topP', NaN, '(0, 1]'],
    ['temperature', -0.1, '>= 0'],
    ['temperature', Infinity, 'finite'],
    ['topK', 1.5, 'integer >= 0'],
    ['topK', -1, 'integer >= 0'],
    ['repetitionPenalty', 0, '> 0'],
    ['repetitionPenalty', Infinity, 'finite'],
    ['maxNewTokens', 0, 'integer >= 1'],
    ['maxNewTokens', 2.5, 'integer >= 1'],
    ['seed', 1.5, 'safe integer'],
    ['seed', 2 ** 60, 'safe integer'],
    ['stop', 'END', 'array of non-empty strings'],
    ['stop', ['ok', ''], 'non-empty string'],
    ['stopWordsIds', [151645], 'non-empty array of token ids'],
    ['stopWordsIds', [[151645, -1]], '[0, 151850]'],
    ['stopWordsIds', [[151900]], '[0, 151850]'],
    ['eosTokenId', 151851, '[0, 151850]'],
    ['eosTokenId', [], 'non-empty array'],
    ['padTokenId', '0', '[0, 151850]'],
    ['doSample', 'yes', 'boolean'],
    ['chatFormat', 'chat', "'chatml' or 'raw'"],
    ['maxWindowSize', 0, 'integer >= 1'],
    ['logprobs', 21, '[0, 20]'],
    ['tokenizerVocabSize', 0, 'integer >= 1'],
  ];
  test.each(BAD)('%s = %p is E_BAD_ARG naming the field and the range', (field, value, range) => {
    const e = errorOf(() => resolve(undefined, { [field]: value } as GenerationCallOptions, CTX));
    expect(e.code).toBe('E_BAD_ARG');
    expect(e.message).toMatch(new RegExp(`^${field}(\\[\\d+\\])* must be`));
    expect(e.message).toContain(range);
  });
  test('token ids are checked against tokenizerVocabSize', () => {
    const small = { tokenizerVocabSize: 100, stopWordsIds: [], padTokenId: 0 };
    expect(resolve(undefined, { ...small, eosTokenId: 99 }, CTX).eosTokenIds).toEqual([99]);
    expect(errorOf(() => resolve(undefined, { ...small, eosTokenId: 100 }, CTX)).message).toMatch(
      /^eosTokenId must be a token id, an integer in \[0, 99\]/,
    );
  });
  test('unknown options are rejected with a suggestion', () => {
    const msg = (o: object) => errorOf(() => resolve(undefined, o as GenerationCallOptions, CTX)).message;
    expect(msg({ topk: 5 })).toBe("unknown option 'topk' — did you mean 'topK'?");
    expect(msg({ top_p: 0.5 })).toBe("unknown option 'top_p' — did you mean 'topP'?");
    expect(msg({ temprature: 0.5 })).toBe("unknown option 'temprature' — did you mean 'temperature'?");
    expect(msg({ max_tokens: 5 })).toBe("unknown option 'max_tokens' — did you mean 'maxNewTokens'?");
    expect(msg({ foo: 1 })).toMatch(/^unknown option 'foo' \(known: maxNewTokens, /);
    expect(errorOf(() => resolve(undefined, { topk: 5 } as GenerationCallOptions, CTX)).code).toBe('E_BAD_ARG');
  });
  test('maxNewTokens must fit the context: explicit values are checked, defaults clamped', () => {
    const ctx = { contextLimit: 1000, promptLength: 700 };
    const e = errorOf(() => resolve(undefined, { maxNewTokens: 301 }, ctx));
    expect(e.code).toBe('E_BAD_ARG');
    expect(e.message).toMatch(/^maxNewTokens must be an integer in \[1, 300\]/);
    expect(resolve(undefined, { maxNewTokens: 300 }, ctx).maxNewTokens).toBe(300);
    expect(resolve(undefined, {}, ctx).maxNewTokens).toBe(300); // the default 512, clamped
    expect(errorOf(() => resolve(undefined, {}, { contextLimit: 1000, promptLength: 1000 })).code).toBe('E_CONTEXT');
  });
  test('bad call arguments', () => {
    expect(errorOf(() => resolve(undefined, 5 as unknown as GenerationCallOptions, CTX)).message).toMatch(
      /^options must be/,
    );
    expect(errorOf(() => resolve(undefined, {}, { contextLimit: 0, promptLength: 0 })).message).toMatch(
      /^contextLimit/,
    );
    expect(errorOf(() => resolve(undefined, {}, { contextLimit: 10, promptLength: -1 })).message).toMatch(
      /^promptLength/,
    );
  });
});
