/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** Where the activation server is; empty: the page's own origin. */
  readonly VITE_API_BASE?: string;
}
