/**
 * Where a long (already NFC-normalized) text can be cut so that encoding the parts separately gives exactly the ids of
 * encoding it whole. BPE runs per regex piece, so a cut is safe when the full text's regex split has a piece boundary
 * there and no piece left of it peeks past it (only `\s+(?!\S)` looks ahead, at the char after a whitespace run).
 * From PAT_STR (§5.2), with p the cut and a, b the chars before and after it:
 *  - a is a letter and b is not: no alternative matches a letter followed by a non-letter ('s|'t.. and \p{L}+ end on
 *    letters; the punctuation alternatives contain no letters).
 *  - a is a digit: every \p{N} is a piece of its own (the other classes exclude \p{N}).
 *  - a is \r or \n and b is not whitespace: a newline can only end a piece (`[\r\n]*`, `\s*[\r\n]+`, `\s+`) or sit
 *    inside whitespace; `\s*[\r\n]+` wins before `\s+(?!\S)` is tried, so the lookahead never decides there.
 * Letters/digits are tested with small fixed sets (ASCII and the Unicode-1.1 CJK block) rather than \p{L}, so that a
 * newer Unicode table in V8 than in tiktoken's regex crate cannot make a cut unsafe. Cuts must also avoid the inside
 * of a special token that is parsed as special (e.g. after the "0" of "<|extra_0|>").
 */
import { MAX_SPECIAL_LEN, specialAt } from './constants';

const isAsciiLetter = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isCjk = (c: number) => c >= 0x4e00 && c <= 0x9fa5;
const isLetter = (c: number) => isAsciiLetter(c) || isCjk(c);
/** Punctuation that is \p{P} in every Unicode version: ASCII non-letters and common full-width/CJK marks. */
const CJK_PUNCT = new Set([...'，。！？：；、（）“”‘’《》「」【】'].map((s) => s.charCodeAt(0)));
const isNonLetter = (c: number) => (c < 0x80 && !isAsciiLetter(c)) || CJK_PUNCT.has(c);
/** Unicode White_Space (what `\s` means in tiktoken's Rust regex; stable since Unicode 6.3). */
const WHITE_SPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
  0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

function regexBoundary(text: string, p: number): boolean {
  const a = text.charCodeAt(p - 1); // all tested a's are BMP chars, so p is never inside a surrogate pair
  const b = text.charCodeAt(p);
  if (isDigit(a)) return true;
  if (isLetter(a)) return isNonLetter(b);
  if (a === 0x0a || a === 0x0d) return !WHITE_SPACE.has(b) && !(b >= 0xdc00 && b <= 0xdfff);
  return false;
}

/** True when p falls strictly inside an occurrence of a special token that `allowed` makes special. */
function insideSpecial(text: string, p: number, allowed: ReadonlySet<string>): boolean {
  for (let k = Math.max(0, p - MAX_SPECIAL_LEN + 1); k < p; k++) {
    const s = specialAt(text, k);
    if (s !== undefined && k + s.length > p && allowed.has(s)) return true;
  }
  return false;
}

/** The first safe cut at or after `from` (text.length if none). */
export function nextSafeCut(text: string, from: number, allowed: ReadonlySet<string>): number {
  for (let p = Math.max(from, 1); p < text.length; p++) {
    if (regexBoundary(text, p) && (allowed.size === 0 || !insideSpecial(text, p, allowed))) return p;
  }
  return text.length;
}
