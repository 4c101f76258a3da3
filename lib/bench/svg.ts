/** A tiny SVG line-chart writer for the benchmark suite (no plotting dependency): log2 x axis, linear y axis. */

export interface Series {
  name: string;
  color: string;
  /** stroke-dasharray of the line (solid when absent) */
  dash?: string;
  points: Array<[number, number]>;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f = (v: number) => (Math.round(v * 10) / 10).toString();

/** Ticks 1-2-5 x 10^k covering [0, max]. */
function niceTicks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(v);
  if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
  return out;
}

function fmtTick(v: number): string {
  if (v === 0) return '0';
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(v % 1000 === 0 ? 0 : 1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
}

function panel(p: Panel, x0: number, y0: number, w: number, h: number): string {
  const m = { l: 58, r: 14, t: 46, b: 44 };
  const pw = w - m.l - m.r, ph = h - m.t - m.b;
  const xs = [...new Set(p.series.flatMap((s) => s.points.map(([x]) => x)))].filter((x) => x > 0).sort((a, b) => a - b);
  const ys = p.series.flatMap((s) => s.points.map(([, y]) => y)).filter((y) => Number.isFinite(y));
  const out: string[] = [`<g transform="translate(${x0},${y0})">`];
  out.push(`<text x="${w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
  if (xs.length === 0 || ys.length === 0) {
    out.push(`<text x="${w / 2}" y="${h / 2}" text-anchor="middle" font-size="12">no data</text></g>`);
    return out.join('\n');
  }
  const lx0 = Math.log2(xs[0]), lx1 = Math.log2(xs[xs.length - 1]);
  const X = (x: number) => m.l + (lx1 === lx0 ? pw / 2 : ((Math.log2(x) - lx0) / (lx1 - lx0)) * pw);
  const ticks = niceTicks(Math.max(...ys) * 1.05);
  const ymax = ticks[ticks.length - 1];
  const Y = (y: number) => m.t + ph - (y / ymax) * ph;
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`);
  for (const t of ticks) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${f(Y(t))}" y2="${f(Y(t))}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 6}" y="${f(Y(t) + 4)}" text-anchor="end" font-size="11">${fmtTick(t)}</text>`);
  }
  for (const x of xs) {
    out.push(`<line x1="${f(X(x))}" x2="${f(X(x))}" y1="${m.t + ph}" y2="${m.t + ph + 4}" stroke="#666"/>`);
    out.push(`<text x="${f(X(x))}" y="${m.t + ph + 16}" text-anchor="middle" font-size="11">${x}</text>`);
  }
  out.push(`<text x="${m.l + pw / 2}" y="${h - 8}" text-anchor="middle" font-size="12">${esc(p.xLabel)}</text>`);
  out.push(`<text transform="translate(14,${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(p.yLabel)}</text>`);
  // legend: one row between the title and the plot, each entry as wide as its name
  const shown = p.series.filter((s) => s.points.some(([x, y]) => x > 0 && Number.isFinite(y)));
  const widths = shown.map((s) => 30 + 6.5 * s.name.length);
  let lx = m.l + pw / 2 - widths.reduce((a, b) => a + b, 0) / 2;
  shown.forEach((s, i) => {
    const pts = s.points.filter(([x, y]) => x > 0 && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${pts.map(([x, y]) => `${f(X(x))},${f(Y(y))}`).join(' ')}"/>`);
    for (const [x, y] of pts) {
      out.push(`<circle cx="${f(X(x))}" cy="${f(Y(y))}" r="3.5" fill="${s.color}"><title>${esc(s.name)}: ${x} → ${y.toFixed(2)}</title></circle>`);
    }
    const ly = 34;
    out.push(`<line x1="${f(lx)}" x2="${f(lx + 20)}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${f(lx + 24)}" y="${ly + 4}" font-size="11">${esc(s.name)}</text>`);
    lx += widths[i];
  });
  out.push('</g>');
  return out.join('\n');
}

/** Panels side by side, a caption line underneath. */
export function chartSvg(panels: Panel[], caption: string): string {
  const w = 480, h = 320, capH = 22;
  const W = w * panels.length, Htot = h + capH;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Htot}" viewBox="0 0 ${W} ${Htot}" font-family="sans-serif">`,
    `<rect width="${W}" height="${Htot}" fill="#fafafa"/>`,
    ...panels.map((p, i) => panel(p, i * w, 0, w, h)),
    `<text x="${W / 2}" y="${h + 14}" text-anchor="middle" font-size="11" fill="#555">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
