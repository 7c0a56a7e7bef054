// The only way the viewer talks to the activation server: openapi-fetch over the generated
// schema. Every call shows in the progress bar; a failure becomes an ApiError carrying the
// server's `message`, and goes to the error banner unless the caller shows it itself (`quiet`).
import createClient from "openapi-fetch";
import type { components, paths } from "../client/schema";
import { ApiError, errorMessage, reportError } from "./errors";
import { trackRequest } from "./progress";

type Schemas = components["schemas"];

/** Same origin by default (the server serves the app; `npm run dev` proxies to it). */
export const API_BASE: string = import.meta.env.VITE_API_BASE ?? "";

const client = createClient<paths>({ baseUrl: API_BASE, headers: { Accept: "application/json" } });

export interface CallOptions {
  /** The caller shows the error itself: do not put it in the banner. */
  quiet?: boolean;
  signal?: AbortSignal;
  /** Shown in the progress bar instead of the route. */
  label?: string;
}

interface FetchResult<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

async function call<T>(path: string, options: CallOptions, send: (signal?: AbortSignal) => Promise<FetchResult<T>>): Promise<T> {
  const done = trackRequest(options.label ?? path);
  try {
    let result: FetchResult<T>;
    try {
      result = await send(options.signal);
    } catch (error) {
      if (isAbort(error)) throw error;
      throw new ApiError(path, 0, `cannot reach the activation server (${String(error)})`);
    }
    const { data, error, response } = result;
    if (!response.ok || data === undefined) {
      throw new ApiError(path, response.status, errorMessage(error, response.status, response.statusText));
    }
    return data;
  } catch (error) {
    if (!options.quiet && !isAbort(error)) reportError(error);
    throw error;
  } finally {
    done();
  }
}

export const api = {
  modelInfo: (o: CallOptions = {}) => call("/model_info", o, (signal) => client.POST("/model_info", { signal })),
  batchedTdb: (body: Schemas["BatchedTdbRequest"], o: CallOptions = {}) =>
    call("/batched_tdb", o, (signal) => client.POST("/batched_tdb", { body, signal })),
  batched: (body: Schemas["BatchedRequest"], o: CallOptions = {}) =>
    call("/batched", o, (signal) => client.POST("/batched", { body, signal })),
  derivedScalars: (body: Schemas["DerivedScalarsRequest"], o: CallOptions = {}) =>
    call("/derived_scalars", o, (signal) => client.POST("/derived_scalars", { body, signal })),
  derivedAttentionScalars: (body: Schemas["DerivedAttentionScalarsRequest"], o: CallOptions = {}) =>
    call("/derived_attention_scalars", o, (signal) => client.POST("/derived_attention_scalars", { body, signal })),
  neuronRecord: (body: Schemas["NodeIdAndDatasets"], o: CallOptions = {}) =>
    call("/neuron_record", o, (signal) => client.POST("/neuron_record", { body, signal })),
  attentionHeadRecord: (body: Schemas["NodeIdAndDatasets"], o: CallOptions = {}) =>
    call("/attention_head_record", o, (signal) => client.POST("/attention_head_record", { body, signal })),
  existingExplanations: (body: Schemas["ExistingExplanationsRequest"], o: CallOptions = {}) =>
    call("/existing_explanations", o, (signal) => client.POST("/existing_explanations", { body, signal })),
  explain: (body: Schemas["NodeIdAndDatasets"], o: CallOptions = {}) =>
    call("/explain", o, (signal) => client.POST("/explain", { body, signal })),
  score: (body: Schemas["ScoreRequest"], o: CallOptions = {}) =>
    call("/score", o, (signal) => client.POST("/score", { body, signal })),
  attributionGraph: (body: Schemas["AttributionGraphRequest"], o: CallOptions = {}) =>
    call("/attribution_graph", o, (signal) => client.POST("/attribution_graph", { body, signal })),
  neuronDatasetsMetadata: (o: CallOptions = {}) =>
    call("/neuron_datasets_metadata", o, (signal) => client.POST("/neuron_datasets_metadata", { signal })),
};
