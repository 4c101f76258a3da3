/**
 * Continuous batching. Every Sequence.forward of a model is a request to its Scheduler, which merges the requests
 * pending at that moment into one native step: decoding sequences (one token each) and prefill chunks of new or long
 * prompts together, at most `maxBatchTokens` tokens and `maxBatchSequences` sequences per step. Concurrent
 * generate()/chat() calls therefore share steps with no API of their own. In lockstep, each generation loop awaits
 * its forward, samples, and submits the next token before the next step is launched (steps start from setImmediate,
 * after the microtasks that sample and resubmit); overlapped steps (below) launch it earlier.
 *
 * Overlapped steps (overlapSteps, on by default): generate() queues each pick one step ahead (submitPickNext: "feed
 * the id my pending pick makes, then pick again"), so when a step ends, the next one can be planned from the picks
 * it just made and launched BEFORE its answers run the generation loops (text decoding, stop checks, the next
 * request, the consumer's chunk handling). That host work then overlaps the next step instead of leaving the device
 * idle between steps (vLLM's async scheduling). A step launches early only when every sequence it answered is
 * chained (its last request came through submitPickNext) or has its next request queued; a sequence that resubmits
 * after its answer (forward(), a plain forwardPick loop) keeps the lockstep behaviour for the steps it is in. When a
 * generation stops, the picks queued ahead of it may already be in a step: that work is wasted (one step's token
 * when it stops on eos or a stop string, up to two when its consumer stops while holding a chunk).
 *
 * KV memory (paged, blocks of 32 positions, cpp/core/kv_cache.h):
 *  - admission: a waiting sequence starts only when the free blocks, less what admitted sequences still need for
 *    their pending prompts, cover its whole prompt plus one generated token; waiting sequences start in FIFO order;
 *  - growth: when a running sequence needs a block and none is free, the most recently arrived sequence not in this
 *    step is preempted: its blocks return to the pool and it goes back to the head of the queue; when readmitted it
 *    recomputes its cache from the ids it had (its NTK alpha stays frozen, so the cache is rebuilt identically) and
 *    its generation never notices (preempt-and-recompute, as vLLM's default);
 *  - a sequence that could not fit even in the whole pool is refused with E_KV_FULL; a full queue with E_QUEUE_FULL.
 * Finishing, aborting or disposing a sequence returns its blocks at once.
 */
import { QwenError, abortError } from '../errors';
import type { NativeModel, NativePick, NativePickRequest, NativeSequence, NativeStepBatch, NativeStepResult } from '../native/types';
import { type NativeStepItem, appendsTo, packStep, unpackPick } from '../native/stepPack';
import { type PickPenalties } from '../sampling/pickPenalties';
import { penaltySourceOf } from '../sampling';

export interface SchedulerOptions {
  maxBatchTokens: number;
  maxBatchSequences: number;
  maxQueue: number;
  vocab: number;
  /** Launch the next step before the last one's answers are delivered when every sequence it answered is chained
   *  (submitPickNext); false: always after them (lockstep). */
  overlapSteps: boolean;
}

/** What one step did (model.onStep). */
export interface StepStats {
  sequences: number;
  /** Prompt (and recompute) tokens of the step. */
  prefillTokens: number;
  /** Sequences that advanced by one generated token. */
  decodeTokens: number;
  /** From the launch to the result back on the main thread (which may be busy with the last step's answers). */
  seconds: number;
  /** Launched before the previous step's answers were all delivered (overlapSteps). */
  overlapped: boolean;
  /** ms from the previous step's result reaching the main thread to this launch (null for a model's first step and
   *  after the scheduler found nothing to do; a step whose work arrived after the last one ended counts the wait): main-thread
   *  time the engine waited through, at least (the result's own way back to the main thread is not counted). With
   *  overlapped steps, the bookkeeping, planning, packing and the addon's copies and checks; in lockstep, every
   *  loop's handling of its answer too. */
  gapMs: number | null;
}

export interface SchedulerStats {
  /** Sequences admitted (holding KV blocks or about to). */
  running: number;
  /** Sequences waiting for admission (new, or preempted and waiting to recompute). */
  waiting: number;
  kvBlockTokens: number;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  /** Blocks given memory so far: the pool keeps them for reuse, so this is the cache's memory high-water mark. */
  kvBlocksAllocated: number;
  /** Bytes the KV pool holds (CUDA: whole slabs of blocks). */
  kvBytesAllocated: number;
  steps: number;
  promptTokens: number;
  generatedTokens: number;
  preemptions: number;
}

interface Request {
  ids: Int32Array;
  all: boolean; // logits of every position (else of the last)
  pick: NativePickRequest | null; // the last position's next id picked in the backend instead of its logits
  /** submitPickNext: the pick request whose id this one feeds (ids[0]), until that id is known; then null */
  follows: Request | null;
  /** Came through submitPickNext: it feeds the id of the pick before it (ids[0]), which packStep adds to pick's
   *  penalty list as generated (the list was made before that id was known). */
  ahead: boolean;
  fed: number; // ids[0, fed) are in the cache
  out: Float32Array | null; // all: [ids.length][V], filled as chunks complete
  resolve(v: Float32Array | NativePick): void;
  reject(e: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** The scheduler's view of one Sequence. */
export class SeqState {
  readonly requests: Request[] = [];
  /** Every id in the cache, in order (replayed after a preemption). */
  history: number[] = [];
  /** Ids still to re-feed after a preemption, before the pending request continues. */
  replay: number[] = [];
  admitted = false;
  queued = false;
  disposed = false;
  inFlight = false;
  /** Its last request came through submitPickNext (and the scheduler overlaps): the next step need not wait for
   *  this sequence's answers. */
  chained = false;
  /** The last request submitted, when it is a pick still to be made: what submitPickNext follows. */
  tailPick: Request | null = null;
  /** The last request submitted was a pick, made: its id (what submitPickNext feeds); else -1. */
  tailId = -1;
  /** The penalty list the native sequence keeps (stepPack 'hold' / 'add'): `list` after its first `events` generated
   *  ids, then `ahead` (ids packStep added as pickAppend, which `list` will count next). null: none, or unknown. */
  held: { list: PickPenalties; events: number; ahead: number[] } | null = null;
  constructor(
    readonly native: NativeSequence,
    readonly arrival: number,
  ) {}

  /** Positions the sequence will hold once every queued request is fed. */
  get queuedPositions(): number {
    let n = this.history.length + this.replay.length;
    for (const r of this.requests) n += r.ids.length - r.fed;
    return n;
  }

  /** A forward of this sequence failed before it was queued: nothing for submitPickNext to follow. */
  clearTail(): void {
    this.tailPick = null;
    this.tailId = -1;
  }

  /** Tokens this sequence has to feed before its head request is answered. */
  get remaining(): number {
    const r = this.requests[0];
    return this.replay.length + (r && r.follows === null ? r.ids.length - r.fed : 0); // (a follower at the head has
    // its id: its pick was made before it got there, or it failed with it)
  }
}

const blocksFor = (positions: number, B: number) => Math.ceil(positions / B);
const kAnswerSliceMs = 4;

interface Planned {
  st: SeqState;
  take: number; // tokens fed this step
  fromReplay: boolean;
}

export class Scheduler {
  private readonly states = new Set<SeqState>();
  private waiting: SeqState[] = [];
  private arrivals = 0;
  private busy = false;
  private scheduled = false;
  private closed = false;
  private rr = 0; // round-robin start among running sequences when they exceed maxBatchSequences
  private inflight: Promise<void> = Promise.resolve();
  /** Answers of finished steps, delivered in order (answer()); a step's answers may be delivered while the next runs. */
  private answers: Array<() => void> = [];
  private answered = 0; // answers[0, answered) delivered
  private delivering = false;
  /** The last step ended in lockstep: the next starts once its answers are delivered. */
  private holding = false;
  private lastResultAt = -1; // performance.now() when the last step's result reached finish() / fail()
  private readonly listeners = new Set<(s: StepStats) => void>();
  private counters = { steps: 0, promptTokens: 0, generatedTokens: 0, preemptions: 0 };

  /** The pool's fixed shape, read once: enqueue() checks every forward against it (a kvStats() call makes an object
   *  of five fields: ~75 us of a 64-sequence step's JS work on the development machine). */
  private readonly pool: { blockTokens: number; maxBlocks: number };

  constructor(
    private readonly native: NativeModel,
    private readonly opts: SchedulerOptions,
  ) {
    const kv = native.kvStats();
    this.pool = { blockTokens: kv.blockTokens, maxBlocks: kv.maxBlocks };
  }

  register(native: NativeSequence): SeqState {
    const st = new SeqState(native, this.arrivals++);
    this.states.add(st);
    return st;
  }

  /** Positions one sequence can hold at most (the whole pool). */
  get capacity(): number {
    const kv = this.pool;
    return kv.maxBlocks * kv.blockTokens;
  }

  stats(): SchedulerStats {
    const kv = this.native.kvStats();
    let running = 0;
    for (const st of this.states) if (st.admitted) running++;
    return {
      running,
      waiting: this.waiting.length,
      kvBlockTokens: kv.blockTokens,
      kvBlocksTotal: kv.maxBlocks,
      kvBlocksUsed: kv.usedBlocks,
      kvBlocksAllocated: kv.madeBlocks,
      kvBytesAllocated: kv.storageBytes,
      ...this.counters,
    };
  }

  onStep(fn: (s: StepStats) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Appends ids to st's sequence; resolves to the logits of the last (or every) new position. */
  submit(st: SeqState, ids: Int32Array, all: boolean, signal?: AbortSignal): Promise<Float32Array> {
    return this.enqueue(st, ids, all, null, signal) as Promise<Float32Array>;
  }

  /** Appends ids to st's sequence; resolves to the backend's greedy pick of the next id (no logits cross over). */
  submitPick(st: SeqState, ids: Int32Array, pick: NativePickRequest, signal?: AbortSignal): Promise<NativePick> {
    return this.enqueue(st, ids, false, pick, signal) as Promise<NativePick>;
  }

  /**
   * Feeds the id that st's last request, a pick, picks (or picked: it may be made already), then picks the next one
   * with `pick`, whose penalty list does not hold that id yet: it is added as generated (packStep) when known. The
   * request is ready as soon as that pick is made, so with overlapSteps the step after the pick's can start before
   * the pick's answer has reached its caller: the host's work between steps overlaps the next step.
   */
  submitPickNext(st: SeqState, pick: NativePickRequest, signal?: AbortSignal): Promise<NativePick> {
    const parent = st.tailPick, id = st.tailId;
    if (!parent && id < 0) {
      return Promise.reject(new QwenError('E_BAD_ARG',
        'forwardPickNext must come right after a forwardPick or forwardPickNext of the same sequence (its last forward was not a pick, or that pick failed)'));
    }
    const ids = new Int32Array(1);
    if (!parent) ids[0] = id;
    return this.enqueue(st, ids, false, pick, signal, parent, true) as Promise<NativePick>;
  }

  private enqueue(
    st: SeqState,
    ids: Int32Array,
    all: boolean,
    pick: NativePickRequest | null,
    signal?: AbortSignal,
    follows: Request | null = null,
    ahead = false,
  ): Promise<Float32Array | NativePick> {
    st.clearTail(); // until this request is queued
    if (st.disposed) return Promise.reject(new QwenError('E_DISPOSED', 'this Sequence was disposed'));
    if (signal?.aborted) return Promise.reject(abortError('forward', signal));
    const kv = this.pool;
    const positions = st.queuedPositions + ids.length;
    if (blocksFor(positions + (all ? 0 : 1), kv.blockTokens) > kv.maxBlocks) {
      return Promise.reject(
        new QwenError(
          'E_KV_FULL',
          `the sequence would hold ${positions} positions; the KV cache holds ${kv.maxBlocks * kv.blockTokens} (options.kvCacheTokens)`,
        ),
      );
    }
    const fresh = !st.admitted && !st.queued;
    if (fresh && this.waiting.length >= this.opts.maxQueue) {
      return Promise.reject(
        new QwenError('E_QUEUE_FULL', `${this.waiting.length} sequences are waiting already (options.maxQueue = ${this.opts.maxQueue})`),
      );
    }
    return new Promise<Float32Array | NativePick>((resolve, reject) => {
      const out = all ? new Float32Array(ids.length * this.opts.vocab) : null;
      const req: Request = { ids, all, pick, follows, ahead, fed: 0, out, resolve, reject, signal };
      if (pick) st.tailPick = req;
      // chained while its last request came through submitPickNext: its next one is queued ahead, if any
      st.chained = this.opts.overlapSteps && ahead;
      if (signal) {
        req.onAbort = () => this.abort(st, req);
        signal.addEventListener('abort', req.onAbort, { once: true });
      }
      st.requests.push(req);
      if (fresh) {
        st.queued = true;
        this.waiting.push(st);
      }
      this.kick();
    });
  }

  /**
   * The sequence is gone: its blocks return to the pool (after the step in flight, if it is in it; that step's
   * request is still answered) and what it asked for beyond that is rejected with E_DISPOSED.
   */
  dispose(st: SeqState): void {
    if (st.disposed) return;
    st.disposed = true;
    const gone = st.requests.splice(st.inFlight ? 1 : 0);
    for (const r of gone) this.settle(r, { error: new QwenError('E_DISPOSED', 'this Sequence was disposed') });
    this.dequeue(st);
    st.admitted = false;
    this.states.delete(st);
    st.native.dispose();
    this.kick();
  }

  /** No steps after this one (the model is being disposed); resolves when the step in flight (if any) has ended. */
  close(): Promise<void> {
    this.closed = true;
    return this.inflight;
  }

  private abort(st: SeqState, req: Request): void {
    const i = st.requests.indexOf(req);
    if (i < 0 || (i === 0 && st.inFlight)) return; // in the step running now: answered when it ends
    if (i === 0 && req.fed > 0) return; // half-fed prompt: the cache holds part of it; let the chunk finish
    st.requests.splice(i, 1);
    const err = abortError('forward', req.signal);
    this.settle(req, { error: err });
    this.dropFollowers(st, i, req, err, (r, e) => this.settle(r, { error: e }));
    if (st.requests.length === 0 && st.replay.length === 0 && !st.admitted) this.dequeue(st);
  }

  /**
   * `parent` (a pick) left st.requests from index `at` without its id: the requests chained behind it
   * (submitPickNext), which were to feed that id, fail with it.
   */
  private dropFollowers(st: SeqState, at: number, parent: Request, error: Error, reject: (r: Request, e: Error) => void): void {
    if (st.tailPick === parent) st.tailPick = null;
    while (at < st.requests.length && st.requests[at].follows === parent) {
      const f = st.requests.splice(at, 1)[0];
      if (st.tailPick === f) st.tailPick = null;
      reject(f, error);
      parent = f;
    }
  }

  private dequeue(st: SeqState): void {
    if (!st.queued) return;
    st.queued = false;
    this.waiting = this.waiting.filter((s) => s !== st);
  }

  private settle(req: Request, value: { logits: Float32Array } | { pick: NativePick } | { error: Error }): void {
    if (req.signal && req.onAbort) req.signal.removeEventListener('abort', req.onAbort);
    // Not `instanceof Float32Array`: the addon's arrays come from the main realm, tests run in a vm context.
    if ('logits' in value) req.resolve(value.logits);
    else if ('pick' in value) req.resolve(value.pick);
    else req.reject(value.error);
  }

  private kick(): void {
    if (this.busy || this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.runStep();
    });
  }

  private preempt(st: SeqState): number {
    const freed = st.native.kvBlocks;
    st.native.releaseKv();
    st.replay = st.history.concat(st.replay);
    st.history = [];
    st.admitted = false;
    st.queued = true;
    // Back to the queue in arrival order among the other preempted ones, ahead of every new sequence.
    let at = 0;
    while (at < this.waiting.length && this.waiting[at].replay.length > 0 && this.waiting[at].arrival < st.arrival) at++;
    this.waiting.splice(at, 0, st);
    this.counters.preemptions++;
    return freed;
  }

  /** Chooses this step's work; may preempt and admit. */
  private plan(): Planned[] {
    const { maxBatchTokens, maxBatchSequences } = this.opts;
    const kv = this.native.kvStats();
    const B = kv.blockTokens;
    let free = kv.maxBlocks - kv.usedBlocks;
    let tokens = maxBatchTokens;
    const plan: Planned[] = [];
    const chosen = new Set<SeqState>();

    // Running sequences with work: decoders first (one token keeps every stream moving), then prompt chunks; oldest
    // first within each, rotated when they exceed one step.
    const running = [...this.states].filter((s) => s.admitted && s.remaining > 0).sort((a, b) => a.arrival - b.arrival);
    const decoders = running.filter((s) => s.remaining === 1 && s.replay.length === 0);
    const prefills = running.filter((s) => !(s.remaining === 1 && s.replay.length === 0));
    if (decoders.length > maxBatchSequences) {
      const k = this.rr++ % decoders.length;
      decoders.push(...decoders.splice(0, k));
    }
    const youngestVictim = (except: SeqState): SeqState | undefined => {
      let v: SeqState | undefined;
      for (const s of this.states) {
        if (!s.admitted || s === except || chosen.has(s) || s.native.kvBlocks === 0) continue;
        if (!v || s.arrival > v.arrival) v = s;
      }
      return v;
    };
    for (const st of [...decoders, ...prefills]) {
      if (plan.length >= maxBatchSequences || tokens === 0) break;
      if (!st.admitted) continue; // preempted by an earlier one in this loop
      const fromReplay = st.replay.length > 0;
      let take = Math.min(fromReplay ? st.replay.length : st.remaining, tokens);
      const len = st.native.length;
      let need = blocksFor(len + take, B) - st.native.kvBlocks;
      while (need > free) {
        const v = youngestVictim(st);
        if (!v || v.arrival < st.arrival) break; // never preempt an older sequence for a younger one
        free += this.preempt(v);
      }
      if (need > free) {
        take = Math.min(take, (st.native.kvBlocks + free) * B - len);
        if (take < 1) continue; // waits for blocks: older sequences finishing or being served free them
        need = blocksFor(len + take, B) - st.native.kvBlocks;
      }
      free -= need;
      tokens -= take;
      chosen.add(st);
      plan.push({ st, take, fromReplay });
    }

    // Admission, FIFO: blocks for the whole prompt + one generated token, beyond what admitted prompts still need.
    let owed = 0;
    const takes = new Map(plan.map((p) => [p.st, p.take]));
    for (const s of this.states) {
      if (!s.admitted) continue;
      const planned = takes.get(s) ?? 0; // blocks for these are taken from `free` already
      owed += Math.max(0, blocksFor(s.native.length + s.remaining, B) - blocksFor(s.native.length + planned, B));
    }
    while (this.waiting.length > 0 && plan.length < maxBatchSequences && tokens > 0) {
      const st = this.waiting[0];
      if (st.remaining === 0) {
        this.waiting.shift(); // nothing asked any more (its request was aborted)
        st.queued = false;
        continue;
      }
      const whole = blocksFor(st.remaining + 1, B);
      if (whole > free - owed) break;
      this.waiting.shift();
      st.queued = false;
      st.admitted = true;
      const fromReplay = st.replay.length > 0;
      const take = Math.min(fromReplay ? st.replay.length : st.remaining, tokens);
      const need = blocksFor(take, B);
      free -= need;
      owed += whole - need;
      tokens -= take;
      plan.push({ st, take, fromReplay });
    }
    return plan;
  }

  private runStep(): void {
    if (this.busy || this.closed) return;
    const plan = this.plan();
    if (plan.length === 0) {
      this.lastResultAt = -1; // idle for want of work: the next step's gap would not be host time
      return;
    }
    const items: NativeStepItem[] = [];
    let prefillTokens = 0;
    let decodeTokens = 0;
    for (const p of plan) {
      const st = p.st;
      st.inFlight = true;
      if (p.fromReplay) {
        items.push({ seq: st.native, ids: Int32Array.from(st.replay.slice(0, p.take)), logits: 0, promptLength: 0 });
        prefillTokens += p.take;
        continue;
      }
      const r = st.requests[0];
      const done = r.fed + p.take === r.ids.length;
      const item: NativeStepItem = {
        seq: st.native,
        ids: r.ids.subarray(r.fed, r.fed + p.take),
        logits: r.all ? 2 : done ? 1 : 0,
        promptLength: st.history.length === 0 && r.fed === 0 ? r.ids.length : 0,
      };
      if (done && r.pick) {
        item.pick = r.pick;
        if (r.ahead) item.pickAppend = r.ids[0];
        this.penaltyListForm(st, item, r.pick);
      }
      items.push(item);
      if (p.take === 1 && st.history.length > 0) decodeTokens++;
      else prefillTokens += p.take;
    }
    this.busy = true;
    const overlapped = this.answered < this.answers.length;
    const t0 = process.hrtime.bigint();
    let started: Promise<NativeStepResult>;
    let batch: NativeStepBatch | null = null;
    try {
      batch = packStep(items);
      started = this.native.step(batch);
    } catch (e) {
      // Not reached by checked requests (Model.checkPick): a pick request changed after its forwardPick was called.
      // The addon's own checks refuse it, and the step's forwards fail together instead of the process.
      for (const p of plan) p.st.held = null; // the kept lists are as they were; send whole lists next time
      started = Promise.reject(e);
    }
    // (after the addon has taken the batch: its copies and checks are host time the device waits through too)
    const gapMs = this.lastResultAt < 0 ? null : performance.now() - this.lastResultAt;
    this.inflight = started.then(
      (out) => this.finish(plan, items, batch!, out, {
        sequences: plan.length, prefillTokens, decodeTokens, seconds: Number(process.hrtime.bigint() - t0) / 1e9, overlapped, gapMs,
      }),
      (e: unknown) => this.fail(plan, e),
    );
  }

  /**
   * How the pick's penalty list travels. A Sampler.pickRequest() list grows only (its prompt, then generated ids
   * counted one by one: PickPenalties' log), so once the native sequence keeps it ('hold'), each later step sends only
   * the ids counted since ('add'): O(new ids) per step instead of O(list) in packStep and in the addon. Any doubt
   * (another sampler, an append the sampler did not count next) sends the whole list and keeps it again.
   */
  private penaltyListForm(st: SeqState, item: NativeStepItem, pick: NativePickRequest): void {
    const src = penaltySourceOf(pick);
    if (!src) return; // not the sampler's, or no penalty on: 'given'
    const h = st.held;
    let from = -1;
    // the kept list is the sampler's after h.events ids, plus h.ahead: those must be the ids it counted next
    if (h && h.list === src.list && pick.ids === src.ids && pick.counts === src.counts && h.events + h.ahead.length <= src.events) {
      from = h.events;
      for (const id of h.ahead) {
        if (src.list.eventAt(from) !== id) {
          from = -1;
          break;
        }
        from++;
      }
    }
    if (from >= 0) {
      item.pickList = 'add';
      item.pickAdds = src.list.eventsBetween(from, src.events);
    } else item.pickList = 'hold';
    const a = item.pickAppend ?? -1;
    st.held = { list: src.list, events: src.events, ahead: appendsTo(pick, a) ? [a] : [] };
  }

  private finish(plan: Planned[], items: NativeStepItem[], batch: NativeStepBatch, result: NativeStepResult, s: StepStats): void {
    this.lastResultAt = performance.now();
    const V = this.opts.vocab;
    const out = result.logits;
    const answers = this.answers; // settled after the bookkeeping, in order, spread over event-loop turns (answer())
    let row = 0;
    let picked = 0;
    // The next step may start before this one's answers are delivered when every sequence answered here has its next
    // request queued already or is chained (its next pick comes through submitPickNext, queued ahead of time).
    let overlap = this.opts.overlapSteps;
    for (let i = 0; i < plan.length; i++) {
      const { st, take, fromReplay } = plan[i];
      const item = items[i];
      st.inFlight = false;
      const rows = item.pick ? 0 : item.logits === 2 ? take : item.logits;
      const pick = item.pick ? unpackPick(result, picked++, batch) : undefined;
      if (st.disposed) {
        // Disposed during this step: answer the request it was serving if this step completed it.
        const r = st.requests.shift();
        if (r && !fromReplay && r.fed + take === r.ids.length) {
          if (r.all && r.out) r.out.set(out.subarray(row * V, (row + take) * V), r.fed * V);
          const logits = r.out ?? out.subarray(row * V, (row + 1) * V);
          answers.push(() => this.settle(r, pick ? { pick } : { logits }));
        } else if (r) this.settle(r, { error: new QwenError('E_DISPOSED', 'this Sequence was disposed') });
        row += rows;
        continue;
      }
      if (fromReplay) {
        st.history.push(...st.replay.splice(0, take));
        continue;
      }
      const r = st.requests[0];
      for (let t = 0; t < take; t++) st.history.push(r.ids[r.fed + t]);
      if (r.all && r.out) r.out.set(out.subarray(row * V, (row + take) * V), r.fed * V);
      r.fed += take;
      if (r.fed === r.ids.length) {
        st.requests.shift();
        const logits = r.out ?? out.subarray(row * V, (row + 1) * V); // a view: no copy of 600 KB per sequence
        answers.push(() => this.settle(r, pick ? { pick } : { logits }));
        if (pick) this.picked(st, r, pick.id);
        if (st.requests.length === 0 && !st.chained) overlap = false;
      } else if (r.signal?.aborted) {
        st.requests.shift(); // aborted during a prompt chunk: stop feeding it
        const err = abortError('forward', r.signal);
        this.settle(r, { error: err });
        this.dropFollowers(st, 0, r, err, (f, e) => this.settle(f, { error: e }));
      }
      row += rows;
    }
    this.counters.steps++;
    this.counters.promptTokens += s.prefillTokens;
    this.counters.generatedTokens += s.decodeTokens;
    for (const fn of this.listeners) {
      try {
        fn(s);
      } catch {
        // a metrics hook must not break serving
      }
    }
    if (overlap) {
      this.busy = false;
      this.runStep(); // the device works on the next step while the answers run the generation loops below
    } else this.holding = true;
    this.deliver();
  }

  /** r's pick was made: the request chained behind it (if any) now knows the id it feeds. */
  private picked(st: SeqState, r: Request, id: number): void {
    if (id < 0) {
      // forwardPick rejects such a pick (no usable logit); what was to feed it fails alike
      const err = new QwenError('E_BACKEND', 'no usable logit for the pick this forward was to feed');
      this.dropFollowers(st, 0, r, err, (f, e) => this.answers.push(() => this.settle(f, { error: e })));
      return;
    }
    if (st.tailPick === r) {
      st.tailPick = null;
      st.tailId = id;
    }
    const f = st.requests[0];
    if (f?.follows === r) {
      f.follows = null;
      f.ids[0] = id;
    }
  }

  /**
   * Delivers the queued answers. Each resolution runs its generation loop up to the next forward (sampling over the
   * vocabulary, text decoding, the consumer's chunk handling: ~0.5-2 ms per sequence on the CPU), all on the main
   * thread; at 64 sequences that is ~100 ms in one go. So they are resolved one per microtask turn (the loops resumed
   * so far advance in between) until kAnswerSliceMs have passed, then the rest after an event-loop turn (I/O, timers).
   * In lockstep (holding) the next step starts after the last one, once every loop has resubmitted.
   */
  private deliver(): void {
    if (this.delivering) return;
    this.delivering = true;
    const slice = (): void => {
      const t0 = performance.now();
      const from = this.answered;
      const next = (): void => {
        const q = this.answers;
        if (this.answered >= q.length) {
          this.answers = [];
          this.answered = 0;
          this.delivering = false;
          if (this.holding) {
            this.holding = false;
            this.busy = false;
          }
          this.kick();
        } else if (this.answered > from && performance.now() - t0 >= kAnswerSliceMs) {
          setImmediate(slice); // after every pending microtask: the loops resumed so far finish
        } else {
          q[this.answered++]();
          queueMicrotask(next);
        }
      };
      next();
    };
    slice();
  }

  private fail(plan: Planned[], e: unknown): void {
    this.lastResultAt = performance.now();
    const msg = (e as Error)?.message ?? String(e);
    const err = msg.startsWith('E_KV_FULL: ')
      ? new QwenError('E_KV_FULL', msg.slice(11), { cause: e })
      : new QwenError('E_BACKEND', msg, { cause: e });
    const later = (r: Request, error: Error) => this.answers.push(() => this.settle(r, { error }));
    for (const { st, fromReplay } of plan) {
      st.inFlight = false;
      if (st.disposed) {
        const r = st.requests.shift(); // the request dispose() left to this step
        if (r) later(r, err);
        continue;
      }
      if (fromReplay) {
        for (const r of st.requests.splice(0)) later(r, err);
        st.tailPick = null;
      } else {
        const r = st.requests.shift();
        if (r) {
          later(r, err);
          this.dropFollowers(st, 0, r, err, later);
        }
      }
    }
    this.holding = true;
    this.deliver();
  }
}
