/**
 * Incremental detokenization for streaming replies. A token can end in the middle of a UTF-8 character (CJK and emoji
 * are often split across tokens), so the bytes of a trailing incomplete character are held back until the next push.
 * The concatenation of all push() results and flush() equals tokenizer.decode(allIds, { errors: 'replace' }).
 */
import type { StreamDecoder } from '../types';
import { decodeUtf8, incompleteTail } from './utf8';

export type BytesOf = (ids: ArrayLike<number>, skipSpecialTokens: boolean) => Uint8Array;

export class Utf8StreamDecoder implements StreamDecoder {
  private pending: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly bytesOf: BytesOf,
    private readonly skipSpecialTokens: boolean,
  ) {}

  push(ids: ArrayLike<number>): string {
    const fresh = this.bytesOf(ids, this.skipSpecialTokens); // validates ids; throws before any state changes
    let bytes = fresh;
    if (this.pending.length > 0) {
      bytes = new Uint8Array(this.pending.length + fresh.length);
      bytes.set(this.pending, 0);
      bytes.set(fresh, this.pending.length);
    }
    const cut = incompleteTail(bytes);
    this.pending = bytes.slice(cut);
    return decodeUtf8(bytes.subarray(0, cut), 'replace');
  }

  /** The held-back bytes (an incomplete character becomes one U+FFFD, as in decode); the decoder is reusable after. */
  flush(): string {
    const rest = this.pending;
    this.pending = new Uint8Array(0);
    return decodeUtf8(rest, 'replace');
  }
}
