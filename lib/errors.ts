/** Errors thrown by qwen-node carry a stable `code` so callers can branch without parsing messages. */
export type QwenErrorCode =
  | 'E_BAD_ARG' // an argument outside its allowed range (the message names it)
  | 'E_BAD_CHECKPOINT' // a checkpoint file or tensor is missing, malformed or inconsistent (the message names it)
  | 'E_NO_BINDING' // the native addon could not be loaded
  | 'E_BACKEND' // the requested backend is unavailable or failed
  | 'E_DISPOSED' // the object was disposed
  | 'E_ABORTED' // an AbortSignal fired
  | 'E_CONTEXT' // a sequence would exceed the supported number of positions
  | 'E_KV_FULL' // a sequence needs more KV-cache positions than the whole cache holds (options.kvCacheTokens)
  | 'E_QUEUE_FULL'; // too many sequences wait for admission (options.maxQueue)

export class QwenError extends Error {
  readonly code: QwenErrorCode;
  constructor(code: QwenErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QwenError';
    this.code = code;
  }
}

export function badArg(name: string, expected: string, got: unknown): QwenError {
  return new QwenError('E_BAD_ARG', `${name} must be ${expected} (got ${describe(got)})`);
}

export function abortError(what: string, signal?: AbortSignal): QwenError {
  const reason = signal?.reason;
  return new QwenError('E_ABORTED', `${what} was aborted${reason instanceof Error ? `: ${reason.message}` : ''}`, {
    cause: reason,
  });
}

export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? v.slice(0, 57) + '...' : v);
  if (typeof v === 'number' || typeof v === 'boolean' || v == null) return String(v);
  if (Array.isArray(v)) return `array(${v.length})`;
  return typeof v;
}
