import { useMemo, useState } from "react";
import type { TokenAndAttentionScalars } from "../api/types";
import { formatNumber, heatColor, heatTextColor } from "../lib/format";
import { strongestPairs } from "../state/attention";
import { showToken } from "../state/nodes";

/**
 * An attention head on one sequence, as token pairs: the outlined token is the query, the keys
 * it reads are colored by the head's value for that pair. Hover a token to make it the query;
 * by default the strongest pair is shown.
 */
export function AttentionPairs({ tokens, testId }: { tokens: TokenAndAttentionScalars[]; testId?: string }) {
  const [strongest] = useMemo(() => strongestPairs(tokens, 1), [tokens]);
  const [hovered, setHovered] = useState<number | null>(null);
  const query = hovered ?? strongest?.query ?? null;
  const row = query === null ? undefined : tokens[query];
  return (
    <div className="attention-seq" data-testid={testId}>
      <div className="token-seq" onMouseLeave={() => setHovered(null)}>
        {tokens.map((t, i) => {
          const normalized = row && query !== null && i <= query ? (row.normalizedScalars[i] ?? 0) : 0;
          return (
            <span
              key={i}
              className={`token ${i === query ? "token-query" : ""}`}
              title={row && query !== null && i <= query ? `${JSON.stringify(row.token)} ← ${JSON.stringify(t.token)}: ${formatNumber(row.scalars[i])}` : t.token}
              style={{ background: heatColor(normalized), color: heatTextColor(normalized) }}
              onMouseEnter={() => setHovered(i)}
            >
              {showToken(t.token)}
            </span>
          );
        })}
      </div>
      {strongest && (
        <div className="muted small">
          strongest pair: {JSON.stringify(tokens[strongest.query]?.token)} ← {JSON.stringify(tokens[strongest.key]?.token)} (
          {formatNumber(strongest.value)})
        </div>
      )}
    </div>
  );
}
