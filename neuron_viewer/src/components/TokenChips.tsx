import { showToken } from "../state/nodes";

/** The prompt's tokens as the model sees them, numbered. */
export function TokenChips({ tokens, testId }: { tokens: string[]; testId?: string }) {
  return (
    <div className="token-chips" data-testid={testId}>
      {tokens.map((t, i) => (
        <span key={i} className="token-chip" title={`token ${i}: ${JSON.stringify(t)}`}>
          <sub>{i}</sub>
          {showToken(t)}
        </span>
      ))}
    </div>
  );
}
