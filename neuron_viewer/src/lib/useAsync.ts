import { useEffect, useRef, useState } from "react";
import { isAbort } from "../api/client";

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  /** The last result for an earlier key, shown (dimmed) while the new one loads. */
  previous: T | undefined;
}

/**
 * Runs `run` whenever `key` changes (null: nothing to run) and keeps the latest result. The
 * previous run is aborted, so a slow answer never overwrites a newer one.
 */
export function useAsync<T>(key: string | null, run: (signal: AbortSignal) => Promise<T>): AsyncState<T> {
  const [result, setResult] = useState<{ key: string; data?: T; error?: unknown } | null>(null);
  const runRef = useRef(run);
  useEffect(() => {
    runRef.current = run;
  });
  useEffect(() => {
    if (key === null) return;
    const controller = new AbortController();
    runRef.current(controller.signal).then(
      (data) => {
        if (!controller.signal.aborted) setResult({ key, data });
      },
      (error: unknown) => {
        if (!controller.signal.aborted && !isAbort(error)) setResult({ key, error });
      },
    );
    return () => controller.abort();
  }, [key]);
  const current = result?.key === key ? result : null;
  return {
    data: current?.data,
    error: current?.error,
    loading: key !== null && current === null,
    previous: current ? undefined : result?.data,
  };
}

/** `value`, once it has stopped changing for `ms` milliseconds. */
export function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return settled;
}
