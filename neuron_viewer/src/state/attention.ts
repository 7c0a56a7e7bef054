import type { TokenAndAttentionScalars } from "../api/types";

export interface TokenPair {
  query: number;
  key: number;
  value: number;
}

/** The (query, key) pairs of a sequence with the largest scalars, largest first. */
export function strongestPairs(tokens: readonly TokenAndAttentionScalars[], n = 1): TokenPair[] {
  const pairs: TokenPair[] = [];
  tokens.forEach((t, query) => t.scalars.forEach((value, key) => pairs.push({ query, key, value })));
  return pairs.sort((a, b) => Math.abs(b.value) - Math.abs(a.value)).slice(0, n);
}
