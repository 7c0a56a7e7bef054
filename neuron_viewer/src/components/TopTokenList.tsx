import type { TokenAndScalar } from "../api/types";
import { formatNumber } from "../lib/format";
import { showToken } from "../state/nodes";

/** Vocabulary tokens as chips, with their scores on hover. */
export function TopTokenList({ tokens, limit = 10, negative = false }: { tokens: TokenAndScalar[]; limit?: number; negative?: boolean }) {
  return (
    <span className={`chips ${negative ? "chips-negative" : ""}`}>
      {tokens.slice(0, limit).map((t, i) => (
        <span key={i} className="chip" title={formatNumber(t.scalar)}>
          {showToken(t.token)}
        </span>
      ))}
    </span>
  );
}
