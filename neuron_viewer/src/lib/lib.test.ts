import { describe, expect, it } from "vitest";
import { countByProbing } from "./countNodes";
import { formatDelta, formatNumber, heatColor } from "./format";
import { createLimiter } from "./limit";

describe("countByProbing", () => {
  it("finds the count with few probes", async () => {
    for (const n of [0, 1, 2, 3, 4, 12, 64, 3072, 32768, 100_000]) {
      let probes = 0;
      const count = await countByProbing(async (i) => {
        probes++;
        return i < n;
      });
      expect(count).toBe(n);
      expect(probes).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(n + 2)) + 2);
    }
  });
});

describe("format", () => {
  it("formats numbers compactly", () => {
    expect(formatNumber(0.0696)).toBe("0.0696");
    expect(formatNumber(0.1)).toBe("0.1");
    expect(formatNumber(12.34)).toBe("12.3");
    expect(formatNumber(100)).toBe("100");
    expect(formatNumber(12345)).toBe("12345");
    expect(formatNumber(0.00012)).toBe("1.20e-4");
    expect(formatNumber(0)).toBe("0");
    expect(formatNumber(null)).toBe("–");
    expect(formatDelta(-0.5)).toBe("−0.5");
    expect(formatDelta(0.25)).toBe("+0.25");
  });

  it("colors by sign", () => {
    expect(heatColor(0)).toBe("transparent");
    expect(heatColor(1)).toContain("37, 99, 235");
    expect(heatColor(-0.5)).toContain("220, 38, 38");
  });
});

describe("createLimiter", () => {
  it("runs at most n tasks at a time, all of them", async () => {
    const limit = createLimiter(2);
    let running = 0;
    let peak = 0;
    const task = (i: number) =>
      limit(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 5));
        running--;
        return i;
      });
    expect(await Promise.all([1, 2, 3, 4, 5].map(task))).toEqual([1, 2, 3, 4, 5]);
    expect(peak).toBe(2);
  });
});
