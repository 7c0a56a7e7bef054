import type { ModelInfo } from "../api/types";
import type { DebuggerState } from "../state/debuggerState";

const K_CHOICES = [5, 10, 20, 30, 50, 100];

const hasTranscoders = (info: ModelInfo) => (info.transcoderLayers?.length ?? 0) > 0;
const hasResidualSaes = (info: ModelInfo) => (info.residualAutoencoderLayers?.length ?? 0) > 0;

/** MLP neurons / MLP latents / transcoder latents, heads / attention latents, residual-stream
 * SAE latents on or off (each offered when the server has the autoencoders), and k. */
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
        <button
          type="button"
          data-testid="mlp-transcoders"
          aria-pressed={state.mlp === "transcoder_latent"}
          disabled={!hasTranscoders(info)}
          title={hasTranscoders(info) ? `transcoders on layers ${info.transcoderLayers?.join(", ")}` : "no transcoders are loaded"}
          onClick={() => onChange({ ...state, mlp: "transcoder_latent" })}
        >
          transcoder latents
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
      <label
        className="field-inline"
        title={hasResidualSaes(info) ? `residual-stream SAEs on layers ${info.residualAutoencoderLayers?.join(", ")}` : "no residual-stream SAEs are loaded"}
      >
        <input
          type="checkbox"
          data-testid="residual-latents"
          checked={state.residual}
          disabled={!hasResidualSaes(info) && !state.residual}
          onChange={(e) => onChange({ ...state, residual: e.target.checked })}
        />
        residual-stream SAE latents
      </label>
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
