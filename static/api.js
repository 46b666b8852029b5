// fetch() wrapper for the vigil HTTP API.
//
// Every call resolves (never rejects) to {status, ok, body, retryAfter}:
// status 0 means the network failed (server down, cable out) and body then
// holds {"error": "..."}; a non-JSON answer becomes {"error": <text>}.
// State-changing requests send JSON with Content-Type application/json,
// which the server requires (together with a same-origin Origin) against CSRF.

/** Seconds from a Retry-After header or a {"retry_after"} body, else null. */
function retryAfter(res, body) {
  const hdr = Number.parseInt(res.headers.get("Retry-After") || "", 10);
  if (Number.isFinite(hdr) && hdr >= 0) return hdr;
  const b = body && Number(body.retry_after);
  return Number.isFinite(b) && b >= 0 ? b : null;
}

export async function api(method, path, payload, { timeoutMs = 30000, headers } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  const init = {
    method,
    credentials: "same-origin",
    cache: "no-store",
    headers: { Accept: "application/json", ...headers },
    signal: ctl.signal,
  };
  if (payload !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    clearTimeout(timer);
    const why = e && e.name === "AbortError" ? "no answer from the server" : "server unreachable";
    return { status: 0, ok: false, body: { error: why }, retryAfter: null };
  }
  let body = null;
  try {
    const text = await res.text();
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = { error: text.trim().slice(0, 300) || res.statusText };
    }
  } catch {
    body = { error: "connection lost while reading the answer" };
  } finally {
    clearTimeout(timer);
  }
  if (!res.ok && (body === null || typeof body !== "object")) {
    body = { error: `${res.status} ${res.statusText}` };
  }
  return { status: res.status, ok: res.ok, body, retryAfter: retryAfter(res, body) };
}

/** The error text of a failed answer, with its status. */
export function errorText(r) {
  const msg = r.body && typeof r.body.error === "string" ? r.body.error : "request failed";
  return r.status ? `${msg} (${r.status})` : msg;
}
