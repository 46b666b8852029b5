// The person's session: what it is (since, from where, until when), logging out, the
// proof a command that asks to confirm needs (step-up), and, for operators, who has a
// second factor and a way to end someone's sessions.
//
// vigil keeps HTTP Basic: the browser resends the credentials it was given with every
// request, and vigil ties them to a session that ends (README, "Sessions"). Logging
// out ends it on the server: from then on this browser's saved credentials get 401.
// So that no login prompt pops up the moment the button is pressed, this tab closes
// its event stream first and shows "signed out"; "Sign in again" reloads the page,
// which the browser answers with its login prompt. A session vigil ends (idle, too
// old, ended by an operator) says so on the stream first (`signedout`), with the same
// view. Every message is the catalogs' (i18n.js), said() so that a change of language says
// it again; why a session ended is the server's English, which api.js reads into the panel's
// words (whyEnded).

import { api, errorText, whyEnded } from "./api.js";
import { $, clockText, fmtValue, h, said } from "./dom.js";
import { t, tx } from "./i18n.js";

const STEP_UP = "X-Vigil-Step-Up";
let mine = null; // GET /api/session
let people = new Map(); // operators: name -> {totp, sessions}

/** Ask for this browser's session and show it ("since 10:02 from 10.0.0.5, until 10:32"). */
export async function showSession() {
  const r = await api("GET", "/api/session");
  if (!r.ok || !r.body) return;
  const s = r.body;
  mine = s;
  const el = $("session");
  said(el, () => {
    el.title = t("session.until", { time: clockText(s.expires), why: whyEnded(s.expires_because) });
    const words = { since: clockText(s.since), until: clockText(s.expires) };
    const addr = h("span", { className: "addr" }, fmtValue(s.addr));
    return s.totp ? tx("session.info.totp", { ...words, addr }) : tx("session.info", { ...words, addr });
  });
  $("logout").hidden = false;
}

/** Log out on the server, after `stop()` (the caller closes its event stream). */
export function wireLogout(stop) {
  $("logout").addEventListener("click", async () => {
    $("logout").disabled = true;
    stop();
    const r = await api("POST", "/api/logout", {});
    signedOut(r.ok ? () => t("signedout.logout")
      : () => t("signedout.failed", { why: errorText(r) }));
  });
  $("signedout-again").addEventListener("click", () => window.location.reload());
}

/** The `signedout` event: vigil ended this session ("idle for 30 min", "ended by alice"). */
export function endedByServer(data, stop) {
  stop();
  const why = data && typeof data.reason === "string" ? data.reason : null;
  signedOut(() => (why === null ? t("signedout.ended")
    : t("signedout.because", { why: whyEnded(why) })));
}

/** Show the signed-out view, saying `say()`. */
function signedOut(say) {
  $("main").hidden = true;
  $("signedout").hidden = false;
  said($("signedout-text"), say);
  $("signedout-again").focus();
}

// ---------------------------------------------------------------- step-up

/** Fill the confirm dialog's proof field: the code or the password, unless a recent proof
 * still covers this session (the field is then hidden). */
export async function askProof() {
  const r = await api("GET", "/api/session");
  const s = r.ok && r.body ? r.body : mine || {};
  const row = $("confirm-proof-row");
  row.hidden = s.step_up === true;
  $("confirm-proof").value = "";
  said($("confirm-proof-label"), () => (s.totp ? t("stepup.label.code")
    : t("stepup.label.password")));
  $("confirm-proof").autocomplete = s.totp ? "one-time-code" : "current-password";
  $("confirm-proof").inputMode = s.totp ? "numeric" : "text";
}

/** The headers that carry the proof typed in the dialog (none if the field was hidden or
 * empty). A header is Latin-1: a password's UTF-8 bytes go as one character each. */
export function proofHeaders() {
  const proof = $("confirm-proof-row").hidden ? "" : $("confirm-proof").value;
  if (!proof) return undefined;
  const bytes = new TextEncoder().encode(proof);
  return { [STEP_UP]: String.fromCharCode(...bytes) };
}

// ---------------------------------------------------------------- operators: people

/** Operators: who may log in, their second factor and sessions; then `render()`. */
export async function loadPeople(isOperator, render) {
  if (!isOperator) return;
  const r = await api("GET", "/api/people");
  if (!r.ok || !r.body || !Array.isArray(r.body.people)) return;
  people = new Map(r.body.people.map((p) => [p.user, p]));
  render();
}

/** What an operator sees beside a person online: "2FA", and "End sessions" (not for
 * themselves: that is Log out); made again by `render()`, in the language of the moment. */
export function personExtras(name, isMe, render) {
  const p = people.get(name);
  if (!p) return null;
  const badge = p.totp
    ? h("span", { className: "role", title: t("people.totp.title") }, t("people.totp")) : null;
  if (isMe) return badge;
  const end = h("button", { type: "button", className: "secondary end-sessions" },
    t("people.end"));
  end.addEventListener("click", async () => {
    end.disabled = true;
    const r = await api("DELETE", `/api/people/${encodeURIComponent(name)}/sessions`);
    end.textContent = r.ok ? t("people.ended", { n: r.body.ended }) : errorText(r);
    loadPeople(true, render);
  });
  return [badge, " ", end];
}
