/**
 * Errors in OpenAI's format, `{ error: { message, type, param, code } }`, and the mapping from what can go wrong
 * (our own checks, QwenError from the model, fastify's validation / parsing errors) to an HTTP status.
 */
import { QwenError, describe } from '../errors';

export type ApiErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error' | 'timeout_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: ApiErrorType = status >= 500 ? 'server_error' : status === 429 ? 'rate_limit_error' : 'invalid_request_error',
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 naming the parameter and what it must be. */
export function badParam(param: string, expected: string, got?: unknown, code = 'invalid_parameter'): ApiError {
  return new ApiError(400, `${param} must be ${expected}${got === undefined ? '' : ` (got ${describe(got)})`}`, param, code);
}

/** Library option names (camelCase) -> request parameter names. */
const PARAM_OF: Record<string, string> = {
  maxNewTokens: 'max_tokens',
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  stop: 'stop',
  seed: 'seed',
  logprobs: 'logprobs',
  ids: 'prompt',
  prompt: 'prompt',
  promptIds: 'prompt',
  messages: 'messages',
  query: 'messages',
  text: 'prompt',
};

/**
 * A QwenError from model.generate / chatStream as an API error. `promptParam` names what carried the prompt
 * ('prompt' or 'messages'); E_BAD_ARG messages start with the option's name, which becomes the parameter.
 */
export function fromQwenError(e: QwenError, promptParam: 'prompt' | 'messages'): ApiError {
  switch (e.code) {
    case 'E_BAD_ARG': {
      const m = /^([A-Za-z_]\w*)((?:\[\d+\]|\.\w+)*) must be/.exec(e.message);
      let param: string | null = null;
      let message = e.message;
      if (m) {
        const base = PARAM_OF[m[1]] ?? m[1];
        param = (base === 'prompt' ? promptParam : base) + m[2];
        message = param + e.message.slice(m[1].length + m[2].length);
      }
      return new ApiError(400, message, param, 'invalid_parameter');
    }
    case 'E_CONTEXT':
    case 'E_KV_FULL':
      return new ApiError(413, e.message, promptParam, 'context_length_exceeded');
    case 'E_QUEUE_FULL':
      return new ApiError(429, `the server is busy: ${e.message}; retry later`, null, 'queue_full');
    case 'E_DISPOSED':
      return new ApiError(503, 'the model is shutting down', null, 'unavailable');
    default:
      return new ApiError(500, `${e.code}: ${e.message}`, null, 'internal_error');
  }
}

interface AjvError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

/** `/messages/0/role` -> `messages[0].role`. */
function pathToParam(instancePath: string): string {
  let out = '';
  for (const part of instancePath.split('/').slice(1)) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(key) ? `[${key}]` : out ? `.${key}` : key;
  }
  return out;
}

const ARTICLE: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'a boolean',
  array: 'an array',
  object: 'an object',
};

/** fastify's ajv validation error (body schema) as a 400 naming the parameter. */
export function fromValidation(errors: readonly AjvError[]): ApiError {
  const v = errors[0];
  let param = pathToParam(v.instancePath);
  let expected: string;
  switch (v.keyword) {
    case 'required':
      param = param ? `${param}.${String(v.params.missingProperty)}` : String(v.params.missingProperty);
      return new ApiError(400, `${param} is required`, param, 'missing_parameter');
    case 'type': {
      const types = String(v.params.type).split(',').filter((t) => t !== 'null');
      expected = types.map((t) => ARTICLE[t] ?? t).join(' or ');
      break;
    }
    case 'enum':
      expected = `one of ${(v.params.allowedValues as unknown[]).map((x) => JSON.stringify(x)).join(', ')}`;
      break;
    case 'maxItems':
      expected = `an array of at most ${String(v.params.limit)} items`;
      break;
    case 'minItems':
      expected = `an array of at least ${String(v.params.limit)} item${v.params.limit === 1 ? '' : 's'}`;
      break;
    default:
      expected = (v.message ?? 'valid').replace(/^must be /, '');
  }
  if (!param) return new ApiError(400, `the request body must be ${expected}`, null, 'invalid_request');
  return new ApiError(400, `${param} must be ${expected}`, param, 'invalid_parameter');
}

/** Anything thrown while handling a request -> ApiError (fastify's own errors keep their 4xx status). */
export function toApiError(e: unknown, promptParam: 'prompt' | 'messages' = 'prompt'): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof QwenError) return fromQwenError(e, promptParam);
  const fe = e as { validation?: AjvError[]; statusCode?: number; code?: string; message?: string };
  if (Array.isArray(fe?.validation) && fe.validation.length > 0) return fromValidation(fe.validation);
  if (typeof fe?.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code =
      fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
        ? 'body_too_large'
        : fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
          ? 'unsupported_media_type'
          : 'invalid_request';
    return new ApiError(fe.statusCode, fe.message ?? 'bad request', null, code);
  }
  return new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, null, 'internal_error');
}
