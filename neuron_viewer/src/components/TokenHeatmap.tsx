import { formatNumber, heatColor, heatTextColor } from "../lib/format";
import { showToken } from "../state/nodes";

export interface HeatToken {
  token: string;
  value: number;
  /** In [-1, 1]: decides the color. */
  normalized: number;
}

/** A sequence of tokens colored by a value (blue positive, red negative); hover shows it. */
export function TokenHeatmap({ tokens, testId }: { tokens: HeatToken[]; testId?: string }) {
  return (
    <div className="token-seq" data-testid={testId}>
      {tokens.map((t, i) => (
        <span
          key={i}
          className="token"
          title={`${JSON.stringify(t.token)}: ${formatNumber(t.value)}`}
          style={{ background: heatColor(t.normalized), color: heatTextColor(t.normalized) }}
        >
          {showToken(t.token)}
        </span>
      ))}
    </div>
  );
}
