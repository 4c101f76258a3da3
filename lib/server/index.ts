/**
 * createServer(model, options): an OpenAI-compatible HTTP server (fastify) over one loaded Model. Concurrent requests
 * become concurrent model.generate / chatStream calls, which the model batches itself (continuous batching).
 *
 *   POST /v1/completions, POST /v1/chat/completions (stream or not), GET /v1/models, GET /v1/models/:id,
 *   GET /health, GET /metrics (Prometheus).
 *
 * The instance is returned ready to `listen()`; `close()` drains: new requests get 503, requests in flight run to
 * their end (or until drainTimeoutMs), then the server closes. The model is the caller's: close() never disposes it.
 */
import type { Socket } from 'node:net';
import * as path from 'node:path';
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions, LogController } from 'fastify';
import { badArg } from '../errors';
import type { Model } from '../model/model';
import { ApiError, toApiError } from './errors';
import { ServerMetrics, createMetrics } from './metrics';
import { checkModel, parseChat, parseCompletion } from './params';
import { GenerationInfo, Job, runGeneration } from './run';
import { chatBodySchema, completionBodySchema } from './schemas';

export { ApiError } from './errors';
export { METRIC_PREFIX } from './metrics';

export interface ServerOptions {
  /** The model id of /v1/models and of every response; requests naming another model get 404. Default: basename of model.dir. */
  modelName?: string;
  /** fastify's logger: false (default: silent), true (JSON lines on stdout) or pino options. One line per request. */
  logger?: FastifyServerOptions['logger'];
  /**
   * Refuse a new generation with 429 when this many sequences already wait for admission (model.stats().waiting).
   * Default: no limit of the server's own; the model's LoadOptions.maxQueue (default 256) still answers 429.
   */
  maxQueue?: number;
  /** Stop a generation that is still running this long after its request arrived (504). Default 0: no limit. */
  requestTimeoutMs?: number;
  /** On close(): stop generations still running after this long (503 / an error event). Default 0: wait for them. */
  drainTimeoutMs?: number;
  /** Largest request body in bytes (413 beyond). Default 8 MiB. */
  bodyLimit?: number;
  /** Also export prom-client's process metrics (CPU, memory, event loop lag, GC) with the `qwen_` prefix. Default true. */
  processMetrics?: boolean;
}

const OPTION_KEYS = new Set(['modelName', 'logger', 'maxQueue', 'requestTimeoutMs', 'drainTimeoutMs', 'bodyLimit', 'processMetrics']);

function checkOptions(o: ServerOptions): void {
  if (typeof o !== 'object' || o === null) throw badArg('options', 'an object', o);
  for (const k of Object.keys(o)) if (!OPTION_KEYS.has(k)) throw badArg(`options.${k}`, `one of ${[...OPTION_KEYS].join(', ')}`, k);
  if (o.modelName !== undefined && (typeof o.modelName !== 'string' || o.modelName.length === 0)) {
    throw badArg('options.modelName', 'a non-empty string', o.modelName);
  }
  const int = (k: 'maxQueue' | 'requestTimeoutMs' | 'drainTimeoutMs' | 'bodyLimit', min: number) => {
    const v = o[k];
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= min)) throw badArg(`options.${k}`, `an integer >= ${min}`, v);
  };
  int('maxQueue', 0);
  int('requestTimeoutMs', 0);
  int('drainTimeoutMs', 0);
  int('bodyLimit', 1024);
  if (o.processMetrics !== undefined && typeof o.processMetrics !== 'boolean') throw badArg('options.processMetrics', 'a boolean', o.processMetrics);
}

export function createServer(model: Model, options: ServerOptions = {}): FastifyInstance {
  checkOptions(options);
  if (model.disposed) throw badArg('model', 'a loaded (not disposed) Model', 'a disposed Model');
  const modelName = options.modelName ?? path.basename(path.resolve(model.dir));
  const created = Math.floor(Date.now() / 1000);
  const metrics: ServerMetrics = createMetrics(model, options.processMetrics ?? true);
  const app = Fastify({
    logger: options.logger ?? false,
    logController: new LogController({ disableRequestLogging: true }), // our own line per request (onRequest below)
    return503OnClosing: false, // draining answers in OpenAI's error format instead
    bodyLimit: options.bodyLimit ?? 8 * 1024 * 1024,
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, allowUnionTypes: true } },
  });

  // --- drain bookkeeping ---------------------------------------------------------------------------------------
  let draining = false;
  const jobs = new Set<Job>();
  let drainTimer: NodeJS.Timeout | undefined;
  const idle: Array<() => void> = [];
  const onJobDone = () => {
    if (draining && jobs.size === 0) idle.splice(0).forEach((f) => f());
  };
  // Open connections and their requests in progress. Node's server.close() waits for every connection: while
  // draining, idle keep-alive connections are closed (closeIdleConnections) and so are connections that never sent a
  // byte (clients such as undici open spares; Node would leave those to the 60 s headersTimeout), so close() returns
  // as soon as the requests in flight are done. A request half received when the drain starts still gets its 503.
  const sockets = new Map<Socket, number>();
  app.server.on('connection', (sock: Socket) => {
    sockets.set(sock, 0);
    sock.once('close', () => sockets.delete(sock));
  });
  const closeIdleSockets = () => {
    app.server.closeIdleConnections?.();
    for (const [sock, busy] of sockets) if (busy === 0 && sock.bytesRead === 0) sock.destroy();
  };
  app.addHook('preClose', async () => {
    draining = true;
    closeIdleSockets();
    if (options.drainTimeoutMs && jobs.size > 0) {
      drainTimer = setTimeout(() => jobs.forEach((j) => j.abort('shutdown')), options.drainTimeoutMs);
      drainTimer.unref();
    }
  });
  app.addHook('onClose', async () => {
    if (jobs.size > 0) await new Promise<void>((resolve) => idle.push(resolve));
    if (drainTimer) clearTimeout(drainTimer);
  });

  // --- per request: metrics and one log line ---------------------------------------------------------------------
  const infos = new WeakMap<FastifyRequest, GenerationInfo>();
  const routeOf = (req: FastifyRequest) => req.routeOptions.url ?? 'unmatched';
  app.addHook('onRequest', async (req, reply) => {
    const res = reply.raw;
    const sock = req.raw.socket;
    if (sockets.has(sock)) sockets.set(sock, sockets.get(sock)! + 1);
    res.once('close', () => {
      if (sockets.has(sock)) sockets.set(sock, sockets.get(sock)! - 1);
      const status = res.headersSent ? res.statusCode : 499; // 499: the client left before any response
      const route = routeOf(req);
      metrics.requests.inc({ route, status: String(status) });
      const line = { method: req.method, url: req.url, route, status, ms: Math.round(reply.elapsedTime), ...infos.get(req) };
      if (status >= 500) req.log.error(line, 'request');
      else req.log.info(line, 'request');
      // A keep-alive connection that finished during a drain would otherwise hold close() for keepAliveTimeout.
      if (draining) setImmediate(closeIdleSockets);
    });
  });

  const sendError = (req: FastifyRequest, reply: FastifyReply, e: ApiError) => {
    metrics.errors.inc({ route: routeOf(req), code: e.code ?? e.type });
    if (e.status === 429 || e.status === 503) reply.header('retry-after', '1');
    if (e.status >= 500) req.log.error({ err: { message: e.message, code: e.code } }, 'request failed');
    return reply.code(e.status).send(e.body());
  };
  app.setErrorHandler((err, req, reply) => {
    const promptParam = routeOf(req) === '/v1/chat/completions' ? 'messages' : 'prompt';
    return sendError(req, reply, toApiError(err, promptParam));
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(req, reply, new ApiError(404, `no route ${req.method} ${req.url.split('?')[0]}`, null, 'not_found')),
  );

  // --- generation routes ---------------------------------------------------------------------------------------
  const generation = (kind: 'completion' | 'chat') => async (req: FastifyRequest, reply: FastifyReply) => {
    if (draining || model.disposed) throw new ApiError(503, 'the server is shutting down', null, 'draining');
    const body = req.body as Record<string, unknown>;
    checkModel(typeof body.model === 'string' ? body.model : undefined, modelName);
    const parsed = kind === 'chat' ? parseChat(body, model) : parseCompletion(body, model);
    if (options.maxQueue !== undefined && model.stats().waiting >= options.maxQueue) {
      const waiting = model.stats().waiting;
      throw new ApiError(429, `the server is busy: ${waiting} requests are waiting (maxQueue ${options.maxQueue}); retry later`, null, 'queue_full');
    }
    const info: GenerationInfo = { stream: parsed.stream };
    infos.set(req, info);
    await runGeneration(req, reply, parsed, {
      model,
      modelName,
      metrics,
      requestTimeoutMs: options.requestTimeoutMs ?? 0,
      jobs,
      onJobDone,
      route: routeOf(req),
      info,
    });
    return reply;
  };
  app.post('/v1/completions', { schema: { body: completionBodySchema } }, generation('completion'));
  app.post('/v1/chat/completions', { schema: { body: chatBodySchema } }, generation('chat'));

  // --- the rest -------------------------------------------------------------------------------------------------
  const modelCard = () => ({
    id: modelName,
    object: 'model',
    created,
    owned_by: 'qwen-node',
    max_model_len: model.disposed ? 0 : model.contextLimit,
  });
  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard()] }));
  app.get('/v1/models/:id', async (req) => {
    const { id } = req.params as { id: string };
    checkModel(id, modelName);
    return modelCard();
  });
  app.get('/health', async (_req, reply) => {
    if (draining || model.disposed) return reply.code(503).send({ status: draining ? 'draining' : 'unavailable' });
    const s = model.stats();
    return {
      status: 'ok',
      model: modelName,
      running: s.running,
      waiting: s.waiting,
      kv_blocks_used: s.kvBlocksUsed,
      kv_blocks_total: s.kvBlocksTotal,
    };
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  return app;
}
