import type { ModelInfo } from "../api/types";
import type { DebuggerState } from "../state/debuggerState";

const K_CHOICES = [5, 10, 20, 30, 50, 100];

/** MLP neurons <-> MLP latents, heads <-> attention latents (with autoencoders), and k. */
export function DebuggerControls({ state, info, onChange }: { state: DebuggerState; info: ModelInfo; onChange: (next: DebuggerState) => void }) {
  const kChoices = K_CHOICES.includes(state.k) ? K_CHOICES : [...K_CHOICES, state.k].sort((a, b) => a - b);
  return (
    <div className="controls row">
      <fieldset className="toggle" title={info.hasMlpAutoencoder ? "" : "no MLP autoencoder is loaded"}>
        <legend>MLP</legend>
        <button type="button" data-testid="mlp-neurons" aria-pressed={state.mlp === "neuron"} onClick={() => onChange({ ...state, mlp: "neuron" })}>
          neurons
        </button>
        <button
          type="button"
          data-testid="mlp-latents"
          aria-pressed={state.mlp === "autoencoder_latent"}
          disabled={!info.hasMlpAutoencoder}
          onClick={() => onChange({ ...state, mlp: "autoencoder_latent" })}
        >
          latents
        </button>
      </fieldset>
      <fieldset className="toggle" title={info.hasAttentionAutoencoder ? "" : "no attention autoencoder is loaded"}>
        <legend>Attention</legend>
        <button type="button" data-testid="attn-heads" aria-pressed={state.attn === "attention_head"} onClick={() => onChange({ ...state, attn: "attention_head" })}>
          heads
        </button>
        <button
          type="button"
          data-testid="attn-latents"
          aria-pressed={state.attn === "autoencoder_latent"}
          disabled={!info.hasAttentionAutoencoder}
          onClick={() => onChange({ ...state, attn: "autoencoder_latent" })}
        >
          latents
        </button>
      </fieldset>
      <label className="field-inline">
        top and bottom
        <select data-testid="k-select" value={state.k} onChange={(e) => onChange({ ...state, k: Number(e.target.value) })}>
          {kChoices.map((k) => (
            <option key={k} value={k}>
              {k}
            </option>
          ))}
        </select>
        nodes per column
      </label>
    </div>
  );
}
