/**
 * Tokenizer benchmark: vocabulary load times and encode/decode throughput on EN / ZH / code / mixed corpora (~1 MB).
 * A plain script (no jest, no ts-node). Run:
 *   npx tsc --outDir /tmp/qwen-bench --module commonjs --target es2022 --esModuleInterop --skipLibCheck --types node bench/tokenizer.ts
 *   NODE_PATH=$PWD/node_modules node /tmp/qwen-bench/bench/tokenizer.js [path/to/qwen.tiktoken]
 */
/* eslint-disable no-console */

const EN =
  'The quick brown fox jumps over the lazy dog. Large language models are trained on trillions of tokens; ' +
  "their tokenizers decide how text is cut into pieces, and it's often where subtle bugs hide. In 2023, Qwen-7B " +
  'was released with a 151,851-token vocabulary covering English, Chinese and code.\n\n';
const ZH =
  '通义千问是阿里云研发的大语言模型，支持中文、英文等多种语言。它在大规模高质量数据上进行了预训练，' +
  '具备强大的理解与生成能力。今天天气很好，我们去公园散步吧！根据你的要求，我写了一个关于年轻人奋斗创业的故事。\n';
const CODE =
  'export function softmax(x: Float32Array): Float32Array {\n  let max = -Infinity;\n  for (const v of x) max = Math.max(max, v);\n' +
  '  const out = new Float32Array(x.length);\n  let sum = 0;\n  for (let i = 0; i < x.length; i++) sum += out[i] = Math.exp(x[i] - max);\n' +
  '  for (let i = 0; i < x.length; i++) out[i] /= sum;\n  return out;\n}\n\ndef f(x):\n    return {"a": x ** 2, "b": [1, 2, 3]}  # comment\n\n';

function corpus(parts: string[], bytes: number, seed: number): string {
  let s = '';
  let n = seed;
  while (Buffer.byteLength(s) < bytes) {
    n = (n * 1103515245 + 12345) % 2147483648;
    // Vary numbers so that the text is not one repeated block.
    s += parts[n % parts.length].replace(/2023/g, String(1900 + (n % 200)));
  }
  return s;
}

function time<T>(fn: () => T): [T, number] {
  const t = performance.now();
  const r = fn();
  return [r, performance.now() - t];
}

async function main(): Promise<void> {
  const file = process.argv[2];
  const [mod, importMs] = time(() => require('../lib/tokenizer') as typeof import('../lib/tokenizer'));
  console.log(`import (WASM compile): ${importMs.toFixed(0)} ms`);
  let t = performance.now();
  const bundled = await mod.Tokenizer.bundled();
  console.log(`Tokenizer.bundled() cold: ${(performance.now() - t).toFixed(0)} ms`);
  t = performance.now();
  await mod.Tokenizer.bundled();
  console.log(`Tokenizer.bundled() cached: ${(performance.now() - t).toFixed(1)} ms`);
  let tok = bundled;
  if (file) {
    t = performance.now();
    tok = await mod.Tokenizer.fromFile(file);
    console.log(`Tokenizer.fromFile() cold: ${(performance.now() - t).toFixed(0)} ms`);
  }

  const corpora: [string, string][] = [
    ['mixed EN/ZH/code', corpus([EN, ZH, CODE], 1 << 20, 1)],
    ['English', corpus([EN], 1 << 20, 2)],
    ['Chinese', corpus([ZH], 1 << 20, 3)],
    ['code', corpus([CODE], 1 << 20, 4)],
  ];
  for (const [name, text] of corpora) {
    const mb = Buffer.byteLength(text) / 1e6;
    let best = Infinity;
    let ids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const [r, ms] = time(() => tok.encode(text));
      ids = r;
      best = Math.min(best, ms);
    }
    const [, asyncMs] = await (async () => {
      const s = performance.now();
      const r = await tok.encodeAsync(text);
      return [r, performance.now() - s] as const;
    })();
    const [, decMs] = time(() => tok.decode(ids));
    const [, streamMs] = time(() => {
      const d = tok.createStreamDecoder();
      for (let i = 0; i < ids.length; i++) d.push([ids[i]]);
      d.flush();
    });
    console.log(
      `${name.padEnd(17)} ${mb.toFixed(2)} MB → ${ids.length} ids (${(Buffer.byteLength(text) / ids.length).toFixed(2)} B/id): ` +
        `encode ${(mb / (best / 1000)).toFixed(1)} MB/s (${best.toFixed(0)} ms), encodeAsync ${asyncMs.toFixed(0)} ms, ` +
        `decode ${(mb / (decMs / 1000)).toFixed(0)} MB/s, stream 1 id/push ${((ids.length / streamMs) * 1000 / 1e6).toFixed(2)} M ids/s`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
