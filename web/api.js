// What both pages need: JSON requests that speak the contract's error
// body, the server's clock, and formatting of money and durations.

/**
 * A contract error: `code` is the `error` field, `status` the HTTP status,
 * `retryAfter` the answer's `Retry-After` in seconds (null without one).
 */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Sends a request; resolves to the parsed JSON body, rejects with ApiError. */
export async function request(method, path, { token, body } = {}) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network", "The shop cannot be reached. Check your connection.");
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const retryAfter = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
    throw new ApiError(
      response.status,
      json?.error ?? "unknown",
      json?.message ?? `HTTP ${response.status}`,
      Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : null,
    );
  }
  return json;
}

/**
 * The server's clock. The offset comes from the midpoint of a round trip
 * to /api/time, so a device whose clock is wrong still counts down to the
 * shop's start time.
 */
export class ServerClock {
  constructor() {
    this.offset = 0;
  }

  async sync() {
    const sent = Date.now();
    const { now_ms } = await request("GET", "/api/time");
    const received = Date.now();
    this.offset = now_ms - (sent + received) / 2;
  }

  nowMs() {
    return Date.now() + this.offset;
  }
}

export function money(cents) {
  return (cents / 100).toLocaleString(undefined, { style: "currency", currency: "USD" });
}

/** 3725 s -> "1:02:05", 65 s -> "1:05". */
export function duration(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
