/** `npx qwen-node <command>`: make-random, bench, doctor, demo, generate, chat, ppl, serve. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseArgs } from 'util';
import { backends, environment } from './backends';
import { benchE2e } from './bench/e2e';
import { QwenError } from './errors';
import { makeRandomCheckpoint, PRESETS } from './model/makeRandom';
import { loadModel, LoadOptions, Model } from './model/model';
import type { GenerateOptions, ChatHistory } from './model/generation';
import * as readline from 'readline';
import { perplexity } from './ppl';

type Handler = (argv: string[]) => Promise<void>;

const USAGE = `qwen-node <command> [options]

Commands:
  demo                         generate with a built-in tiny random-weight model and the real vocabulary
  generate --model DIR PROMPT  stream a completion to stdout
  chat --model DIR             interactive ChatML chat (/reset clears history, Ctrl-C stops a reply)
  ppl --model DIR FILE         perplexity of a text file [--ctx N --stride N --no-ntk --no-logn]
  serve --model DIR            OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, /metrics)
      [--port 8000] [--host 127.0.0.1] [--device auto|cpu|cuda] [--dtype auto|fp32|bf16|fp16] [--threads N]
      [--model-name NAME] [--max-queue N] [--kv-cache-tokens N] [--max-batch-tokens N] [--max-batch-sequences N]
      [--request-timeout-ms N] [--drain-timeout-ms N] [--quiet]
  make-random                  write a random-weight checkpoint in the Hugging Face layout
      --preset tiny|small|7b --dtype bf16|fp16|fp32 --seed N --out DIR [--tiktoken PATH]
  bench                        CPU/GPU benchmark: prefill and decode speed against measured limits
      [--model DIR | --preset small] [--threads N] [--prompt 128] [--decode 16] [--device cpu|cuda|auto]
      [--dtype auto|fp32|bf16] [--repeat N (timed prefills, median)] [--json]
  doctor                       which backend will be used, and why
Run 'qwen-node <command> --help' for the options of a command.`;

export function cacheDir(): string {
  return process.env.QWEN_NODE_CACHE ?? path.join(os.homedir(), '.cache', 'qwen-node');
}

function progressBar(label: string): (f: number) => void {
  if (!process.stderr.isTTY) return () => undefined;
  return (f) => {
    const w = 30, n = Math.round(f * w);
    process.stderr.write(`\r${label} [${'#'.repeat(n)}${' '.repeat(w - n)}] ${(f * 100).toFixed(0)}%${f >= 1 ? '\n' : ''}`);
  };
}

function intOpt(v: string | undefined, name: string, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new QwenError('E_BAD_ARG', `--${name} must be an integer >= ${min} (got ${v})`);
  return n;
}

/** A random checkpoint of a preset in the cache dir, made once and reused (bench, demo). */
export async function cachedRandom(preset: 'tiny' | 'small' | '7b', dtype: 'bf16' | 'fp16' | 'fp32', seed: number): Promise<string> {
  const dir = path.join(cacheDir(), `random-${preset}-${dtype}-seed${seed}`);
  if (fs.existsSync(path.join(dir, 'config.json'))) return dir;
  process.stderr.write(`writing a ${preset} random-weight checkpoint to ${dir} (once)\n`);
  // tiktoken: null — the tokenizer then uses the bundled vocabulary (identical to qwen.tiktoken), so nothing
  // outside the package is needed.
  await makeRandomCheckpoint({ preset, dtype, seed, out: dir, tiktoken: null, onProgress: progressBar('make-random') });
  return dir;
}

/** Sampling flags shared by generate, chat and demo. */
const SAMPLING = {
  model: { type: 'string' }, device: { type: 'string', default: 'auto' }, threads: { type: 'string' },
  temperature: { type: 'string' }, 'top-p': { type: 'string' }, 'top-k': { type: 'string' }, seed: { type: 'string' },
  'max-new-tokens': { type: 'string' }, 'repetition-penalty': { type: 'string' }, greedy: { type: 'boolean' },
  help: { type: 'boolean' },
} as const;

function samplingOptions(v: Record<string, string | boolean | undefined>): GenerateOptions {
  const num = (k: string) => (v[k] === undefined ? undefined : Number(v[k]));
  const o: GenerateOptions = {
    temperature: num('temperature'), topP: num('top-p'), topK: num('top-k'), seed: num('seed'),
    maxNewTokens: num('max-new-tokens'), repetitionPenalty: num('repetition-penalty'),
  };
  if (v.greedy) o.doSample = false;
  for (const k of Object.keys(o) as (keyof GenerateOptions)[]) if (o[k] === undefined) delete o[k];
  return o;
}

async function openModel(v: Record<string, string | boolean | undefined>, dir: string): Promise<Model> {
  return loadModel(dir, {
    device: (v.device as LoadOptions['device']) ?? 'auto',
    threads: v.threads === undefined ? undefined : intOpt(v.threads as string, 'threads', 1),
    onProgress: progressBar('loading'),
  });
}

/** Streams a generation to stdout; Ctrl-C aborts it. Returns tokens and seconds. */
async function stream(model: Model, prompt: string, opts: GenerateOptions): Promise<{ tokens: number; seconds: number; finish: string }> {
  const ac = new AbortController();
  const onInt = () => ac.abort();
  process.once('SIGINT', onInt);
  const t0 = process.hrtime.bigint();
  let tokens = 0, finish = '';
  try {
    for await (const c of model.generate(prompt, { ...opts, signal: ac.signal })) {
      process.stdout.write(c.text);
      if (c.usage) tokens = c.usage.completionTokens;
      if (c.finishReason) finish = c.finishReason;
    }
  } finally {
    process.removeListener('SIGINT', onInt);
  }
  return { tokens, seconds: Number(process.hrtime.bigint() - t0) / 1e9, finish };
}

const commands: Record<string, Handler> = {
  async demo(argv) {
    const { values, positionals } = parseArgs({ args: argv, options: SAMPLING, allowPositionals: true });
    if (values.help) return void console.log('qwen-node demo [PROMPT] [--max-new-tokens N --seed N --temperature T ...]');
    const dir = await cachedRandom('tiny', 'bf16', 1);
    const model = await openModel(values, dir);
    try {
      const prompt = positionals.join(' ') || 'Once upon a time, in a small village by the sea,';
      console.log(`qwen-node demo: a tiny Qwen-architecture model with RANDOM weights (${dir}) and the real Qwen`);
      console.log(`vocabulary, on ${model.device}. The text is meaningless by design: it shows the whole pipeline`);
      console.log(`(tokenizer, engine, sampler, streaming) working. Use 'qwen-node generate --model DIR' with a real Qwen-7B for real text.\n`);
      process.stdout.write(prompt);
      const r = await stream(model, prompt, { maxNewTokens: 48, seed: 1, ...samplingOptions(values) });
      console.log(`\n\n${r.tokens} tokens in ${r.seconds.toFixed(2)} s: ${(r.tokens / r.seconds).toFixed(1)} tok/s (finish: ${r.finish})`);
    } finally {
      await model.dispose();
    }
  },

  async generate(argv) {
    const { values, positionals } = parseArgs({ args: argv, options: SAMPLING, allowPositionals: true });
    if (values.help || !values.model || positionals.length === 0) {
      return void console.log('qwen-node generate --model DIR "prompt" [--temperature T --top-p P --top-k K --seed N --max-new-tokens N --greedy]');
    }
    const model = await openModel(values, values.model);
    try {
      const r = await stream(model, positionals.join(' '), samplingOptions(values));
      process.stderr.write(`\n[${r.tokens} tokens, ${(r.tokens / r.seconds).toFixed(1)} tok/s, ${r.finish}]\n`);
    } finally {
      await model.dispose();
    }
  },

  async chat(argv) {
    const { values } = parseArgs({ args: argv, options: { ...SAMPLING, system: { type: 'string' } } });
    if (values.help || !values.model) return void console.log('qwen-node chat --model DIR [--system TEXT] [sampling flags]; /reset clears the history, Ctrl-C stops a reply, Ctrl-D exits');
    const model = await openModel(values, values.model);
    const rl = readline.createInterface({ input: process.stdin, output: process.stdout, prompt: 'you> ' });
    let history: ChatHistory = [];
    let busy: AbortController | null = null;
    rl.on('SIGINT', () => (busy ? busy.abort() : rl.close()));
    rl.prompt();
    try {
      for await (const line of rl) {
        const q = line.trim();
        if (q === '/reset') { history = []; console.log('(history cleared)'); rl.prompt(); continue; }
        if (!q) { rl.prompt(); continue; }
        busy = new AbortController();
        process.stdout.write('qwen> ');
        let reply = '';
        for await (const c of model.chatStream(q, { history, system: values.system, ...samplingOptions(values), signal: busy.signal })) {
          process.stdout.write(c.text);
          reply += c.text;
        }
        busy = null;
        history = [...history, [q, reply.trim()]];
        process.stdout.write('\n');
        rl.prompt();
      }
    } finally {
      await model.dispose();
    }
  },

  async 'make-random'(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        preset: { type: 'string' }, dtype: { type: 'string', default: 'bf16' }, seed: { type: 'string', default: '0' },
        out: { type: 'string' }, tiktoken: { type: 'string' }, help: { type: 'boolean' },
      },
    });
    if (values.help) return void console.log('qwen-node make-random --preset tiny|small|7b --dtype bf16|fp16|fp32 --seed N --out DIR [--tiktoken PATH]');
    if (!values.preset || !(values.preset in PRESETS)) throw new QwenError('E_BAD_ARG', `--preset must be one of ${Object.keys(PRESETS).join(', ')}`);
    if (!['bf16', 'fp16', 'fp32'].includes(values.dtype!)) throw new QwenError('E_BAD_ARG', '--dtype must be bf16, fp16 or fp32');
    if (!values.out) throw new QwenError('E_BAD_ARG', '--out DIR is required');
    const t0 = Date.now();
    const r = await makeRandomCheckpoint({
      preset: values.preset as 'tiny', dtype: values.dtype as 'bf16', seed: intOpt(values.seed, 'seed', 0, 0),
      out: values.out, tiktoken: values.tiktoken, onProgress: progressBar('make-random'),
    });
    console.log(`wrote ${r.dir}: ${(r.bytes / 1e9).toFixed(2)} GB of ${values.dtype} weights in ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
  },

  async bench(argv) {
    // The concurrency benchmark (continuous batching) lives in the suite, with its own options.
    if (argv.some((a) => a.startsWith('--concurrency'))) {
      process.exitCode = await (await import('./bench/suite')).main(argv);
      return;
    }
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' }, preset: { type: 'string', default: 'small' }, threads: { type: 'string' },
        prompt: { type: 'string', default: '128' }, decode: { type: 'string', default: '16' },
        device: { type: 'string', default: 'cpu' }, dtype: { type: 'string', default: 'auto' }, json: { type: 'boolean' },
        repeat: { type: 'string' }, help: { type: 'boolean' },
      },
    });
    if (values.help) return void console.log(USAGE);
    const prefillRepeats = intOpt(values.repeat, 'repeat', 1);
    const threads = intOpt(values.threads, 'threads', os.availableParallelism());
    const dir = values.model ?? (await cachedRandom(values.preset as 'small', 'bf16', 1));
    const log = values.json ? () => undefined : (s: string) => console.log(s);
    log(`model ${dir}`);
    const model = await loadModel(dir, {
      device: values.device as LoadOptions['device'], dtype: values.dtype as LoadOptions['dtype'], threads, onProgress: progressBar('load'),
    });
    try {
      const b = backends();
      log(`device ${model.device} (dtype ${values.dtype}); cpu isa ${b.cpu.isa}, ${threads} threads; weights ${(model.weightBytes.total / 1e9).toFixed(2)} GB ${model.weightBytes.dtypes.join('/')}`);
      const r = await benchE2e(model, {
        prompt: intOpt(values.prompt, 'prompt', 128), decode: intOpt(values.decode, 'decode', 16), threads,
        measureBandwidth: true, log, actBytes: values.dtype === 'fp32' ? 4 : 2, prefillRepeats,
      });
      if (values.json) console.log(JSON.stringify(r, null, 2));
    } finally {
      await model.dispose();
    }
  },

  async ppl(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        model: { type: 'string' }, device: { type: 'string', default: 'auto' }, threads: { type: 'string' },
        ctx: { type: 'string', default: '2048' }, stride: { type: 'string' }, 'no-ntk': { type: 'boolean' },
        'no-logn': { type: 'boolean' }, 'max-tokens': { type: 'string' }, help: { type: 'boolean' },
      },
    });
    if (values.help || !values.model || positionals.length !== 1) {
      return void console.log('qwen-node ppl --model DIR FILE [--ctx 2048 --stride N --no-ntk --no-logn --max-tokens N]');
    }
    const text = fs.readFileSync(positionals[0], 'utf8');
    const model = await loadModel(values.model, {
      device: values.device as LoadOptions['device'],
      threads: values.threads === undefined ? undefined : intOpt(values.threads, 'threads', 1),
      dynamicNtk: values['no-ntk'] ? false : undefined,
      logn: values['no-logn'] ? false : undefined,
      onProgress: progressBar('loading'),
    });
    try {
      let ids = await model.tokenizer.encodeAsync(text, { allowedSpecial: 'none' });
      if (values['max-tokens']) ids = ids.slice(0, intOpt(values['max-tokens'], 'max-tokens', 2));
      const ctx = intOpt(values.ctx, 'ctx', 2048, 2);
      const r = await perplexity(model, ids, {
        ctx, stride: values.stride === undefined ? undefined : intOpt(values.stride, 'stride', 1), onProgress: progressBar('ppl'),
      });
      console.log(`ppl ${r.ppl.toFixed(4)} (nll ${r.nll.toFixed(4)} nats/token over ${r.scored} tokens, ${r.windows} windows of <= ${ctx}` +
        `${values['no-ntk'] ? ', NTK off' : ''}${values['no-logn'] ? ', logN off' : ''})`);
    } finally {
      await model.dispose();
    }
  },

  async serve(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' }, port: { type: 'string', default: '8000' }, host: { type: 'string', default: '127.0.0.1' },
        device: { type: 'string', default: 'auto' }, dtype: { type: 'string', default: 'auto' }, threads: { type: 'string' },
        'model-name': { type: 'string' }, 'max-queue': { type: 'string' }, 'kv-cache-tokens': { type: 'string' },
        'max-batch-tokens': { type: 'string' }, 'max-batch-sequences': { type: 'string' },
        'request-timeout-ms': { type: 'string' }, 'drain-timeout-ms': { type: 'string' }, quiet: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    });
    if (values.help || !values.model) {
      return void console.log(
        'qwen-node serve --model DIR [--port 8000 --host 127.0.0.1 --device auto|cpu|cuda --dtype auto|fp32|bf16|fp16 --threads N\n' +
          '  --model-name NAME --max-queue N --kv-cache-tokens N --max-batch-tokens N --max-batch-sequences N\n' +
          '  --request-timeout-ms N --drain-timeout-ms N --quiet]\n' +
          'Prints the listening URL on stdout, one JSON log line per request on stderr (--quiet: none).\n' +
          'SIGTERM / SIGINT: stop accepting, let requests in flight finish, dispose the model, exit 0 (a second signal exits 1 at once).',
      );
    }
    const opt = (k: string, min = 1) => (values[k as keyof typeof values] === undefined ? undefined : intOpt(values[k as keyof typeof values] as string, k, 0, min));
    const port = intOpt(values.port, 'port', 8000, 0);
    if (port > 65535) throw new QwenError('E_BAD_ARG', `--port must be an integer in [0, 65535] (got ${port})`);
    const maxQueue = opt('max-queue', 0);
    const model = await loadModel(values.model, {
      device: values.device as LoadOptions['device'], dtype: values.dtype as LoadOptions['dtype'],
      threads: opt('threads'), kvCacheTokens: opt('kv-cache-tokens'), maxBatchTokens: opt('max-batch-tokens'),
      maxBatchSequences: opt('max-batch-sequences'), maxQueue, onProgress: progressBar('loading'),
    });
    const { createServer } = await import('./server');
    let app;
    try {
      app = createServer(model, {
        modelName: values['model-name'], maxQueue, requestTimeoutMs: opt('request-timeout-ms', 0),
        drainTimeoutMs: opt('drain-timeout-ms', 0), processMetrics: true,
        logger: values.quiet ? false : { level: 'info', stream: process.stderr },
      });
      await app.listen({ port, host: values.host });
    } catch (e) {
      await model.dispose();
      throw e;
    }
    const addr = app.server.address();
    const shown = typeof addr === 'object' && addr ? (addr.family === 'IPv6' ? `[${addr.address}]` : addr.address) + `:${addr.port}` : String(addr);
    console.log(`http://${shown}`);
    process.stderr.write(`qwen-node serve: model ${values.model} on ${model.device}, OpenAI API at http://${shown}/v1\n`);
    const server = app;
    await new Promise<void>((resolve, reject) => {
      let stopping = false;
      const stop = (sig: NodeJS.Signals) => {
        if (stopping) {
          process.stderr.write(`qwen-node serve: ${sig} again, exiting without draining\n`);
          process.exit(1);
        }
        stopping = true;
        process.stderr.write(`qwen-node serve: ${sig}: draining (requests in flight finish; ${sig} again exits at once)\n`);
        server
          .close()
          .then(() => model.dispose())
          .then(() => {
            process.removeListener('SIGTERM', stop);
            process.removeListener('SIGINT', stop);
            process.stderr.write('qwen-node serve: stopped\n');
            resolve();
          }, reject);
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
  },

  async doctor() {
    const env = environment();
    let b;
    try {
      b = backends();
    } catch (e) {
      // Exactly when people run doctor: print what was looked for, then fail.
      console.log(JSON.stringify({ environment: env }, null, 2));
      throw new QwenError('E_NO_BINDING', `the native addon does not load: ${(e as Error).message}`);
    }
    console.log(JSON.stringify({ environment: env, ...b }, null, 2)); // one JSON object: scripts parse it
    console.log(`device 'auto' uses: ${b.auto}${b.auto === 'cpu' && b.cuda.error ? ` (CUDA: ${b.cuda.error})` : ''}`);
    if (b.cuda.available && !b.cuda.cublas) {
      console.log(`cuBLAS not found (${b.cuda.cublasError}); set QWEN_CUBLAS_PATH to libcublas.so.13 (e.g. a pip nvidia/cu13/lib) for the large-GEMM path`);
    }
  },
};

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE);
    return 0;
  }
  const handler = commands[cmd];
  if (!handler) {
    console.error(`qwen-node: unknown command '${cmd}'\n\n${USAGE}`);
    return 2;
  }
  try {
    await handler(rest);
    return 0;
  } catch (e) {
    console.error(`qwen-node ${cmd}: ${(e as Error).message}`);
    return 1;
  }
}

/** Register more commands (the TypeScript layer adds demo/generate/chat/ppl). */
export function addCommand(name: string, h: Handler): void {
  commands[name] = h;
}
