import { createStore, useStore } from "../lib/store";

/** A failed server call, as shown to the user. */
export class ApiError extends Error {
  readonly path: string;
  readonly status: number;

  constructor(path: string, status: number, message: string) {
    super(message);
    this.name = "ApiError";
    this.path = path;
    this.status = status;
  }

  /** "503 /neuron_record: no neuron dataset ..." */
  describe(): string {
    const status = this.status === 0 ? "network error" : `HTTP ${this.status}`;
    return `${this.path} (${status}): ${this.message}`;
  }
}

/** The message of an error body: the server's `message`, else FastAPI's `detail`, else the text. */
export function errorMessage(body: unknown, status: number, statusText: string): string {
  if (body && typeof body === "object") {
    const { message, detail } = body as { message?: unknown; detail?: unknown };
    if (typeof message === "string" && message) return message;
    if (typeof detail === "string" && detail) return detail;
    if (Array.isArray(detail) && detail.length > 0) {
      return detail
        .map((d: { loc?: unknown[]; msg?: string }) => `${(d.loc ?? []).join(".")}: ${d.msg ?? "invalid"}`)
        .join("; ");
    }
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 500);
  return `${status} ${statusText}`.trim();
}

export interface BannerError {
  id: number;
  text: string;
}

const bannerErrors = createStore<BannerError[]>([]);
let nextId = 1;

/** Shows an error in the banner at the top of every page (until dismissed). */
export function reportError(error: unknown): void {
  const text = error instanceof ApiError ? error.describe() : String(error);
  const current = bannerErrors.get();
  if (current.some((e) => e.text === text)) return;
  bannerErrors.set([...current, { id: nextId++, text }].slice(-5));
}

export function dismissError(id: number): void {
  bannerErrors.set(bannerErrors.get().filter((e) => e.id !== id));
}

export function clearErrors(): void {
  bannerErrors.set([]);
}

export function useBannerErrors(): BannerError[] {
  return useStore(bannerErrors);
}
