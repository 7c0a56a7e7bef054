import { defineConfig } from "vitest/config";

// End-to-end tests: a real activation server (started by e2e/globalSetup.ts) serving the built
// viewer, driven in headless Chromium by playwright-core. One file at a time, one browser.
export default defineConfig({
  test: {
    include: ["e2e/**/*.e2e.ts"],
    globalSetup: ["e2e/globalSetup.ts"],
    testTimeout: 90_000,
    hookTimeout: 180_000,
    fileParallelism: false,
    pool: "forks",
    reporters: ["verbose"],
  },
});
