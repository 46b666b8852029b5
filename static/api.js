// fetch() wrapper for the vigil HTTP API.
//
// Every call resolves (never rejects) to {status, ok, body, retryAfter}:
// status 0 means the network failed (server down, cable out) and body then
// holds {"error": "..."}; a non-JSON answer becomes {"error": <text>}.
// State-changing requests send JSON with Content-Type application/json,
// which the server requires (together with a same-origin Origin) against CSRF.
//
// The server's error messages are English and stable (for scripts); the
// panel says the errors it knows in its own words (errorText), with the
// server's text where it tells the person more (a refused value: 400).

import { clockText } from "./dom.js";
import { locale, msgKey, t } from "./i18n.js";

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
    return { status: 0, ok: false, body: { error: why }, retryAfter: null, timeout: why[0] === "n" };
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

// The panel's words for an answer's status; the server's text follows these.
const STATUS = {
  400: msgKey("error.400"),
  401: msgKey("error.401"),
  403: msgKey("error.403"),
  404: msgKey("error.404"),
  409: msgKey("error.409"),
  503: msgKey("error.503"),
  504: msgKey("error.504"),
};
// Statuses whose server text only repeats what the panel's words say.
const PLAIN = new Set([401, 403, 404, 504]);

// Why the control channel is off, as the server says it (server/control/channel.py), and the
// panel's message for it; `code`: parameters that are something to type or configure.
const OFF = "control channel off: ";
const OFF_REASONS = {
  "disabled in the config ([control] enabled = false)":
    { key: msgKey("devices.off.disabled"), code: { setting: "[control] enabled = false" } },
  "this kernel has no SCTP (on a Raspberry Pi: sudo modprobe sctp)":
    { key: msgKey("devices.off.nosctp"), code: { command: "sudo modprobe sctp" } },
  "not started": { key: msgKey("devices.off.starting"), code: {} },
  closed: { key: msgKey("devices.off.closed"), code: {} },
};

/** The panel's message for the server's "control channel off: <why>": {key, code, words}. */
export function offMessage(off) {
  const why = off.startsWith(OFF) ? off.slice(OFF.length) : off;
  if (Object.hasOwn(OFF_REASONS, why)) return { ...OFF_REASONS[why], words: {} };
  return { key: msgKey("devices.off.other"), code: {}, words: { why } };
}

/** The server's words for a device that cannot take a command (server/control/), as the panel's. */
function unavailable(detail) {
  if (detail.startsWith(OFF)) {
    const off = offMessage(detail);
    return t(off.key, { ...off.code, ...off.words });
  }
  const m = /^device '(.*)' (is offline|was lost before it answered)$/.exec(detail);
  if (!m) return null;
  return m[2] === "is offline" ? t("error.offline", { device: m[1] })
    : t("error.lost", { device: m[1] });
}

// Why vigil ended a session, as the server says it (server/people/sessions.py, server/web/
// api.py): in a 401's "signed out: <why>; log in again", a `signedout` event's reason and
// /api/session's expires_because. Durations are "12 h", "30 min" or "90 s".
const DURATION = String.raw`(\d+(?:\.\d+)?) (h|min|s)`;
const UNITS = { h: "hour", min: "minute", s: "second" };
const REASONS = [ // [the server's words, the panel's message, its parameters from the match]
  [/^you logged out$/, msgKey("session.why.logout"), () => ({})],
  [new RegExp(`^idle for ${DURATION}$`), msgKey("session.why.idle"),
    (m) => ({ time: duration(m[1], m[2]) })],
  [new RegExp(`^${DURATION} since you logged in$`), msgKey("session.why.age"),
    (m) => ({ time: duration(m[1], m[2]) })],
  [/^ended by (.+)$/s, msgKey("session.why.by"), (m) => ({ who: m[1] })],
  [/^your account changed \(a new password or second factor\)$/,
    msgKey("session.why.account"), () => ({})],
  [/^more than (\d+) sessions of (.+)$/s, msgKey("session.why.user"),
    (m) => ({ n: Number(m[1]), user: m[2] })],
  [/^more than (\d+) sessions in all$/, msgKey("session.why.total"), (m) => ({ n: Number(m[1]) })],
];

/** "30 min" as the panel's language says it ("30 minutes", "30分钟"). */
function duration(n, unit) {
  return new Intl.NumberFormat(locale(), { style: "unit", unit: UNITS[unit], unitDisplay: "long" })
    .format(Number(n));
}

/** Why a session ended (or will), in the panel's words; the server's own for one it does not know. */
export function whyEnded(why) {
  for (const [re, key, params] of REASONS) {
    const m = re.exec(why);
    if (m) return t(key, params(m));
  }
  return why;
}

/** A 401's reason in the panel's words: a sentence for the banner. */
export function signedOutText(r) {
  const detail = r.body && typeof r.body.error === "string" ? r.body.error : "";
  const ended = /^signed out: (.*); log in again$/s.exec(detail);
  if (ended) return t("banner.ended", { why: whyEnded(ended[1]) });
  if (detail === "wrong user name, password or code") return t("banner.wrong");
  return t("banner.signedout");
}

/**
 * A failed answer in the panel's words for the errors it knows (a 409 names the holder,
 * and `device` when given), with the server's text where that says more.
 */
export function errorText(r, device = null) {
  const b = r.body && typeof r.body === "object" ? r.body : {};
  const detail = typeof b.error === "string" ? b.error : "";
  if (r.status === 0) return r.timeout ? t("error.timeout") : t("error.network");
  if (r.status === 409 && typeof b.holder === "string") {
    const held = { device, who: b.holder, since: clockText(b.since) };
    return device === null ? t("error.held", held) : t("error.held.device", held);
  }
  if (r.status === 429) return t("error.429", { n: r.retryAfter ?? 1 });
  if (r.status === 403 && (b.step_up === "code" || b.step_up === "password")) {
    const wrong = detail.startsWith("step-up refused");
    if (b.step_up === "code") return wrong ? t("stepup.wrong.code") : t("stepup.needed.code");
    return wrong ? t("stepup.wrong.password") : t("stepup.needed.password");
  }
  const known = r.status === 503 ? unavailable(detail) : null;
  if (known !== null) return t("error.detail", { what: t("error.503"), detail: known });
  const what = STATUS[r.status] ? t(STATUS[r.status]) : t("error.status", { status: String(r.status) });
  return detail && !PLAIN.has(r.status) ? t("error.detail", { what, detail }) : what;
}
