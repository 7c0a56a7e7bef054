import { useState } from "react";
import { api } from "../../api/client";
import type { TokenAndAttentionScalars, TokenAndScalar } from "../../api/types";
import { formatNumber } from "../../lib/format";
import { useAsync } from "../../lib/useAsync";
import { AttentionPairs } from "../AttentionPairs";
import { ErrorNote, Loading, Section } from "../Notes";
import { TokenHeatmap } from "../TokenHeatmap";
import { isTokenPairPage } from "../../state/nodes";
import type { NodeId } from "./nodeId";

interface Records {
  max: number;
  top: (TokenAndScalar[] | TokenAndAttentionScalars[])[];
  random: (TokenAndScalar[] | TokenAndAttentionScalars[])[];
  heads: boolean;
}

function loadRecords(id: NodeId, signal: AbortSignal): Promise<Records> {
  const body = { dst: id.dst, layerIndex: id.layer, activationIndex: id.index, datasets: [id.dataset] };
  const options = { signal, quiet: true, label: "loading dataset examples" };
  if (isTokenPairPage(id.nodeType)) {
    return api.attentionHeadRecord(body, options).then((r) => ({
      max: r.maxAttentionActivation,
      top: r.mostPositiveTokenSequences,
      random: r.randomTokenSequences,
      heads: true,
    }));
  }
  return api.neuronRecord(body, options).then((r) => ({ max: r.maxActivation, top: r.topActivations, random: r.randomSample, heads: false }));
}

function Sequence({ seq, heads, testId }: { seq: TokenAndScalar[] | TokenAndAttentionScalars[]; heads: boolean; testId: string }) {
  if (heads) return <AttentionPairs tokens={seq as TokenAndAttentionScalars[]} testId={testId} />;
  const tokens = (seq as TokenAndScalar[]).map((t) => ({ token: t.token, value: t.scalar, normalized: t.normalizedScalar }));
  return <TokenHeatmap tokens={tokens} testId={testId} />;
}

/** Top-activating dataset examples as token heatmaps (token pairs for heads), and random ones. */
export function RecordsSection({ id }: { id: NodeId }) {
  const records = useAsync(id.key, (signal) => loadRecords(id, signal));
  const [shown, setShown] = useState(10);
  const r = records.data;
  return (
    <Section title="Top-activating dataset examples" testId="records">
      {records.loading && <Loading>loading dataset examples…</Loading>}
      {records.error !== undefined && <ErrorNote title="No dataset records for this model:" error={records.error} />}
      {r && (
        <>
          <p className="muted small">
            max activation {formatNumber(r.max)} · {r.top.length} top examples · {r.random.length} random examples
            {r.heads && " · hover a token to see what it attends to"}
          </p>
          <div className="sequences">
            {r.top.slice(0, shown).map((seq, i) => (
              <Sequence key={i} seq={seq} heads={r.heads} testId="record-sequence" />
            ))}
          </div>
          {r.top.length > shown && (
            <button type="button" className="link-button" onClick={() => setShown(shown + 20)}>
              show more
            </button>
          )}
          {r.random.length > 0 && (
            <details>
              <summary>Random examples</summary>
              <div className="sequences">
                {r.random.slice(0, 10).map((seq, i) => (
                  <Sequence key={i} seq={seq} heads={r.heads} testId="random-sequence" />
                ))}
              </div>
            </details>
          )}
        </>
      )}
    </Section>
  );
}
