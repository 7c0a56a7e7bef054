// Hand-written routing over the History API: four pages, no dependency.
import { useSyncExternalStore } from "react";

export const NODE_PAGE_TYPES = [
  "mlp_neuron",
  "attention_head",
  "mlp_autoencoder_latent",
  "attention_autoencoder_latent",
  // an attention latent seen through the token pairs its input comes from (the original
  // client's page for every attention latent)
  "autoencoder_latent_by_token_pair",
  // not in the original client: residual-stream SAE latents and transcoder latents
  "residual_autoencoder_latent",
  "transcoder_latent",
] as const;
export type NodePageType = (typeof NODE_PAGE_TYPES)[number];

export type Route =
  | { page: "welcome" }
  | { page: "debugger"; model: string }
  | { page: "graph"; model: string }
  | { page: "node"; model: string; nodeType: NodePageType; layer: number; index: number }
  | { page: "notFound"; path: string };

function isNodePageType(s: string): s is NodePageType {
  return (NODE_PAGE_TYPES as readonly string[]).includes(s);
}

function nonNegativeInt(s: string): number | null {
  return /^\d+$/.test(s) ? Number(s) : null;
}

/** `/`, `/<model>/tdb` (or the original's `tdb_alpha`), `/<model>/graph`,
 * `/<model>/<nodeType>/<layer>/<index>`. */
export function matchRoute(pathname: string): Route {
  const parts = pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: "welcome" };
  const [model, second, layer, index] = parts;
  if (parts.length === 2 && model && (second === "tdb" || second === "tdb_alpha")) {
    return { page: "debugger", model };
  }
  if (parts.length === 2 && model && second === "graph") return { page: "graph", model };
  if (parts.length === 4 && model && second && isNodePageType(second)) {
    const l = nonNegativeInt(layer ?? "");
    const i = nonNegativeInt(index ?? "");
    if (l !== null && i !== null) return { page: "node", model, nodeType: second, layer: l, index: i };
  }
  return { page: "notFound", path: pathname };
}

export function debuggerPath(model: string, search = ""): string {
  return `/${encodeURIComponent(model)}/tdb${search && !search.startsWith("?") ? `?${search}` : search}`;
}

export function graphPath(model: string, search = ""): string {
  return `/${encodeURIComponent(model)}/graph${search && !search.startsWith("?") ? `?${search}` : search}`;
}

export function nodePagePath(model: string, nodeType: NodePageType, layer: number, index: number, search = ""): string {
  const q = search && !search.startsWith("?") ? `?${search}` : search;
  return `/${encodeURIComponent(model)}/${nodeType}/${layer}/${index}${q}`;
}

// ---------------------------------------------------------------- location store

interface Location {
  pathname: string;
  search: string;
}

const listeners = new Set<() => void>();
let current: Location | null = null; // read lazily: this module also runs in unit tests

function snapshot(): Location {
  return { pathname: window.location.pathname, search: window.location.search };
}

function currentLocation(): Location {
  current ??= snapshot();
  return current;
}

function notify() {
  const next = snapshot();
  const now = currentLocation();
  if (next.pathname !== now.pathname || next.search !== now.search) {
    current = next;
    listeners.forEach((listener) => listener());
  }
}

if (typeof window !== "undefined") window.addEventListener("popstate", notify);

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  if (to === window.location.pathname + window.location.search) return;
  if (options.replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  notify();
}

export function useLocation(): Location {
  return useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    currentLocation,
  );
}
