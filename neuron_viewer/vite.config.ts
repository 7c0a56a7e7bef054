import { readFileSync } from "node:fs";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// In dev mode (`npm run dev`) Vite serves the app and forwards every API route of the server's
// OpenAPI document (plus /docs and /openapi.json) to the activation server.
const apiServer = process.env.TDB_API_SERVER ?? "http://127.0.0.1:8000";
const openapi = JSON.parse(readFileSync(new URL("./src/client/openapi.json", import.meta.url), "utf8")) as {
  paths: Record<string, unknown>;
};
const apiPaths = Object.keys(openapi.paths).filter((path) => path !== "/");
const proxy = Object.fromEntries(
  [...apiPaths, "/docs", "/openapi.json"].map((path) => [`^${path}$`, { target: apiServer, changeOrigin: true }]),
);

export default defineConfig({
  plugins: [react()],
  server: { host: "127.0.0.1", port: 5173, proxy },
  build: { outDir: "dist", sourcemap: true, chunkSizeWarningLimit: 800 },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
