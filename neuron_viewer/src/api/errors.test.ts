import { describe, expect, it } from "vitest";
import { ApiError, errorMessage } from "./errors";

describe("errorMessage", () => {
  it("prefers the server's message", () => {
    expect(errorMessage({ message: "no model is loaded", detail: [] }, 503, "Service Unavailable")).toBe("no model is loaded");
  });

  it("falls back to FastAPI's detail", () => {
    expect(errorMessage({ detail: "Not Found" }, 404, "Not Found")).toBe("Not Found");
    expect(errorMessage({ detail: [{ loc: ["body", "prompt"], msg: "Field required" }] }, 422, "")).toBe("body.prompt: Field required");
  });

  it("uses a text body, else the status", () => {
    expect(errorMessage("Bad Gateway\n", 502, "Bad Gateway")).toBe("Bad Gateway");
    expect(errorMessage(undefined, 500, "Internal Server Error")).toBe("500 Internal Server Error");
  });

  it("describes where the error came from", () => {
    expect(new ApiError("/neuron_record", 503, "no dataset").describe()).toBe("/neuron_record (HTTP 503): no dataset");
    expect(new ApiError("/model_info", 0, "cannot reach").describe()).toBe("/model_info (network error): cannot reach");
  });
});
