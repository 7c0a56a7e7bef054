import { dismissError, useBannerErrors } from "../api/errors";

/** Errors from the server, at the top of every page, until dismissed. */
export function ErrorBanner() {
  const errors = useBannerErrors();
  if (errors.length === 0) return null;
  return (
    <div className="error-banner" role="alert" data-testid="error-banner">
      {errors.map((e) => (
        <div key={e.id} className="error-banner-item">
          <span>{e.text}</span>
          <button type="button" className="link-button" aria-label="Dismiss" onClick={() => dismissError(e.id)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}
