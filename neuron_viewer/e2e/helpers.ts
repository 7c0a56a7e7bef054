import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { ARTIFACTS_DIR, CHROMIUM } from "./config";

export const SCREENSHOTS_DIR = join(ARTIFACTS_DIR, "screenshots");

/** Headless Debian Chromium (playwright-core gives it a fresh profile directory). */
export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/** A browser with one 1600x1000 page whose uncaught errors go to `pageErrors` (each test file opens its own). */
export async function openPage(pageErrors: string[]): Promise<{ browser: Browser; page: Page }> {
  const browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  return { browser, page };
}

/** `<name>.png`: what the window shows; `<name>-full.png`: the whole page. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS_DIR, { recursive: true });
  const path = join(SCREENSHOTS_DIR, `${name}.png`);
  await page.screenshot({ path });
  await page.screenshot({ path: join(SCREENSHOTS_DIR, `${name}-full.png`), fullPage: true });
  return path;
}

/** Waits until the debugger shows fresh results and no request is in flight. */
export async function settled(page: Page, timeout = 60_000): Promise<void> {
  await page.waitForFunction(
    () =>
      document.querySelector('[data-testid="results"]') !== null &&
      document.querySelector('[data-testid="results-stale"]') === null &&
      document.querySelector('[data-testid="progress"]') === null,
    undefined,
    { timeout, polling: 100 },
  );
}

export async function numberAt(page: Page, selector: string): Promise<number> {
  const raw = await page.locator(selector).first().getAttribute("data-value");
  if (raw === null || raw === "") throw new Error(`no data-value at ${selector}`);
  return Number(raw);
}

export async function rowKeys(page: Page, limit = 10): Promise<string[]> {
  const keys = await page.locator('[data-testid="node-row"]').evaluateAll((rows) => rows.map((r) => r.getAttribute("data-node-key") ?? ""));
  return keys.slice(0, limit);
}

export function queryOf(page: Page): URLSearchParams {
  return new URL(page.url()).searchParams;
}
