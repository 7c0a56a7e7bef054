/** Compact numbers for tables: 3 significant digits, no exponent for ordinary magnitudes. */
export function formatNumber(x: number | null | undefined): string {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (x === 0) return "0";
  const abs = Math.abs(x);
  if (abs >= 1e5 || abs < 1e-3) return x.toExponential(2);
  if (abs >= 1000) return String(Math.round(x));
  let s = x.toPrecision(3);
  if (s.includes(".")) s = s.replace(/0+$/, "").replace(/\.$/, "");
  return s;
}

/** Signed change, e.g. "+0.0123". */
export function formatDelta(x: number): string {
  return `${x >= 0 ? "+" : "−"}${formatNumber(Math.abs(x))}`;
}

/** Background for a value in [-1, 1]: blue for positive, red for negative. */
export function heatColor(normalized: number): string {
  const a = Math.min(1, Math.abs(normalized));
  if (!Number.isFinite(a) || a === 0) return "transparent";
  return normalized > 0 ? `rgba(37, 99, 235, ${(0.85 * a).toFixed(3)})` : `rgba(220, 38, 38, ${(0.85 * a).toFixed(3)})`;
}

/** Text color readable on heatColor(normalized). */
export function heatTextColor(normalized: number): string {
  return Math.abs(normalized) > 0.55 ? "#fff" : "inherit";
}

export function maxAbs(values: readonly number[]): number {
  return values.reduce((m, v) => (Number.isFinite(v) ? Math.max(m, Math.abs(v)) : m), 0);
}
