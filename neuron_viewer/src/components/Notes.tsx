import type { ReactNode } from "react";
import { ApiError } from "../api/errors";

export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.describe();
  if (error instanceof Error) return error.message;
  return String(error);
}

/** An error shown where the missing content would be. */
export function ErrorNote({ title, error }: { title: string; error: unknown }) {
  return (
    <div className="error-note" role="alert">
      <strong>{title}</strong>
      <span>{errorText(error)}</span>
    </div>
  );
}

export function Loading({ children }: { children: ReactNode }) {
  return (
    <div className="loading">
      <span className="spinner" aria-hidden /> {children}
    </div>
  );
}

export function Section({ title, children, testId, actions }: { title: string; children: ReactNode; testId?: string; actions?: ReactNode }) {
  return (
    <section className="card" data-testid={testId}>
      <header className="card-header">
        <h2>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}
