/** Small HTTP helpers for the server tests: JSON posts and a raw SSE reader (fetch, no client library). */

export interface Sse {
  status: number;
  contentType: string | null;
  /** Parsed `data:` payloads, in order ('[DONE]' kept as the string). */
  events: unknown[];
  done: boolean;
}

export async function postJson(url: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; headers: Headers; json: any }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...init });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, headers: r.headers, json };
}

/**
 * POST and read an SSE response. `onEvent` may return true to stop reading and abort the request (a disconnect
 * mid-stream). Non-SSE responses come back with their JSON as the only event.
 */
export async function postSse(url: string, body: unknown, onEvent?: (e: unknown, i: number) => boolean | void): Promise<Sse> {
  const ac = new AbortController();
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: ac.signal });
  const out: Sse = { status: r.status, contentType: r.headers.get('content-type'), events: [], done: false };
  if (!out.contentType?.startsWith('text/event-stream')) {
    out.events.push(await r.json());
    return out;
  }
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let k: number;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, k);
        buf = buf.slice(k + 2);
        if (!block.startsWith('data: ')) throw new Error(`not an SSE data block: ${JSON.stringify(block)}`);
        const data = block.slice(6);
        const ev = data === '[DONE]' ? data : JSON.parse(data);
        out.events.push(ev);
        if (ev === '[DONE]') out.done = true;
        if (onEvent?.(ev, out.events.length - 1) === true) {
          ac.abort();
          return out;
        }
      }
    }
  } catch (e) {
    if (!ac.signal.aborted) throw e;
  }
  return out;
}

export async function waitFor(cond: () => boolean, timeoutMs = 20000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
