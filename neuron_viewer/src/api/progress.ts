import { createStore, useStore } from "../lib/store";

/** Requests in flight, shown by the progress bar. */
export interface PendingRequest {
  id: number;
  label: string;
  startedAt: number;
}

const pending = createStore<PendingRequest[]>([]);
let nextId = 1;

/** Registers a request; call the returned function when it settles. */
export function trackRequest(label: string): () => void {
  const entry = { id: nextId++, label, startedAt: Date.now() };
  pending.set([...pending.get(), entry]);
  return () => pending.set(pending.get().filter((p) => p.id !== entry.id));
}

export function usePendingRequests(): PendingRequest[] {
  return useStore(pending);
}
