import { useEffect, useState } from "react";
import { usePendingRequests } from "../api/progress";

/** A bar and a line of text while requests run; the text appears once one takes 300 ms. */
export function ProgressBar() {
  const pending = usePendingRequests();
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (pending.length === 0) return;
    const timer = setInterval(() => setNow(Date.now()), 200);
    return () => clearInterval(timer);
  }, [pending.length]);
  if (pending.length === 0) return null;
  const oldest = pending[0];
  const elapsed = oldest ? Math.max(0, now - oldest.startedAt) : 0;
  const others = pending.length > 1 ? ` (+${pending.length - 1} more)` : "";
  return (
    <div className="progress" role="status" aria-live="polite" data-testid="progress">
      <div className="progress-bar" />
      {elapsed >= 300 && oldest && (
        <div className="progress-text">
          {oldest.label}… {(elapsed / 1000).toFixed(1)} s{others}
        </div>
      )}
    </div>
  );
}
