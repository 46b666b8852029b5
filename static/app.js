// vigil control panel: state from the HTTP API, kept live by the event
// stream of /api/events, which all tabs of one browser share (stream.js).
//
// Start-up and every resynchronisation work the same way: start the event
// stream first and queue its events, load the snapshots (users, chat,
// audit), then apply the queued events on top. The devices, who is online
// and whether the control channel is off come with the stream's first
// `reset` (or, in a follower tab, the leader's snapshot of the same), so
// the panel never asks GET /api/devices, which is a 503 while the control
// channel is off: a normal state of a machine without SCTP, not an error.
// Events are idempotent on top of a snapshot (presence carries the whole
// online list, device events the whole device entry, chat and command
// events have ids), so nothing is lost or shown twice in the gap between
// the two.
//
// A device's card is built from the entities it declares (entities.js):
// a control or a reading each, showing the device view's `state`, which
// device events, and the results of commands, keep current.
//
// When the browser gives up the stream (readyState CLOSED, e.g. after a
// 503) we check /api/me again (which shows the "panel is full" view when
// needed) and reopen it, resuming after the last event id. A `reset` on a
// resumed stream means the server could not replay what we missed: resync.

import { api, errorText } from "./api.js";
import { Series } from "./chart.js";
import { $, clockText, fmtValue, h, replace, timeEl } from "./dom.js";
import { CONTROLS, entityRow, question, valueText, verb } from "./entities.js";
import {
  askProof, endedByServer, loadPeople, personExtras, proofHeaders, showSession, wireLogout,
} from "./session.js";
import { startStream } from "./stream.js";

const FEED_MAX = 200;
const CHAT_MAX = 500;

const state = {
  me: null, // {user, role}
  online: [],
  maxUsers: null,
  controlOff: null, // "control channel off: …" or null
  based: false, // had a reset (the devices) to start from
  devices: new Map(), // id -> device view (see deviceView)
  chatIds: new Set(),
  feedRows: new Map(), // command id -> <li>
  feedCommands: new Map(), // command id -> the event or audit record its <li> shows
  auditPresence: new Set(), // "join:alice", "leave:bob" in the last audit snapshot
};

// ---------------------------------------------------------------- connection

let stream = null;
let streamState = "connecting";
let retries = 0;
let retryTimer = null;
let syncing = 0; // generation of the running resync, 0 when none
let queued = [];

const CONN_TEXT = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  offline: "offline (no network)",
  full: "waiting: panel full",
  signedout: "not signed in",
};

function setConn(s) {
  const el = $("conn");
  if (el.dataset.state === s) return;
  el.dataset.state = s;
  $("conn-text").textContent = CONN_TEXT[s] || s;
}

function showStreamState() {
  setConn(navigator.onLine === false ? "offline" : streamState);
}

function banner(text) {
  const el = $("banner");
  el.hidden = !text;
  el.textContent = text || "";
}

function backoff() {
  retries += 1;
  return Math.min(15, 2 ** Math.min(retries, 4));
}

function later(fn, seconds) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(fn, seconds * 1000);
}

/** Ask who we are; on success start (or reopen) the stream and load everything. */
async function connect() {
  clearTimeout(retryTimer);
  const r = await api("GET", "/api/me");
  if (r.status === 200 && r.body && typeof r.body.user === "string") {
    retries = 0;
    banner("");
    hideFull();
    setMe(r.body);
    showSession();
    if (stream) stream.reopen();
    else stream = startStream(streamCallbacks);
    resync();
    return;
  }
  if (r.status === 503) {
    showFull(r);
    return;
  }
  if (r.status === 401) {
    setConn("signedout");
    const why = r.body && typeof r.body.error === "string" ? `${r.body.error}. ` : "";
    banner(`You are not signed in: ${why}Reload the page to log in.`);
    return;
  }
  const wait = r.retryAfter ?? backoff();
  setConn(navigator.onLine === false ? "offline" : "reconnecting");
  banner(`Cannot reach the panel: ${errorText(r)}. Retrying in ${wait} s.`);
  later(connect, wait);
}

const streamCallbacks = {
  event(kind, data, id, initial) {
    if (id !== null) $("conn").dataset.lastEventId = String(id);
    if (syncing) queued.push([kind, data, initial]);
    else applyEvent(kind, data, initial);
  },
  state(s) {
    streamState = s;
    if (s === "connected") retries = 0;
    showStreamState();
  },
  closed() {
    // The browser gave up (an HTTP error such as 503): start over.
    later(connect, backoff());
  },
  snapshot() {
    if (!state.based) return null;
    return {
      online: state.online,
      devices: [...state.devices.values()].map((d) => d.entry),
      control_off: state.controlOff,
    };
  },
};

/** Load the snapshots while queueing events; then apply the queue. */
async function resync() {
  const gen = Date.now() + Math.random();
  syncing = gen;
  queued = [];
  $("feed").setAttribute("aria-busy", "true");
  $("chat-log").setAttribute("aria-busy", "true");
  await Promise.all([loadUsers(), loadChat(), loadAudit()]);
  if (syncing !== gen) return; // a newer resync took over
  syncing = 0;
  const q = queued;
  queued = [];
  for (const [kind, data, initial] of q) applyEvent(kind, data, initial, true);
  $("feed").setAttribute("aria-busy", "false");
  $("chat-log").setAttribute("aria-busy", "false");
}

function applyEvent(kind, data, initial, replayed = false) {
  try {
    if (kind === "presence") applyPresence(data, replayed);
    else if (kind === "device") applyDevice(data);
    else if (kind === "command") applyCommand(data);
    else if (kind === "chat") addChat(data);
    else if (kind === "reset") applyReset(data, initial);
    else if (kind === "signedout") endedByServer(data, () => stream && stream.stop());
  } catch (e) {
    console.error("vigil: cannot apply %s event", kind, e);
  }
}

/**
 * The state to start from (a fresh stream, a follower's snapshot), or, on
 * a resumed stream, the news that events were lost: chat and activity may
 * have gaps too, so reload them.
 */
function applyReset(data, initial) {
  if (Array.isArray(data.online)) setOnline(data.online);
  state.controlOff = typeof data.control_off === "string" ? data.control_off : null;
  const off = $("devices-off");
  off.hidden = state.controlOff === null;
  off.textContent = state.controlOff || "";
  setDevices(Array.isArray(data.devices) ? data.devices : []);
  sayCommandsAgain();
  state.based = true;
  shown();
  for (const dev of state.devices.values()) loadHistory(dev);
  if (!initial) resync();
}

const READY_MS = 2000;

/** Show the panel (see the end of this file). */
function shown() {
  $("main").removeAttribute("aria-busy");
}

window.addEventListener("offline", () => setConn("offline"));
window.addEventListener("online", showStreamState);

// ---------------------------------------------------------------- who am I

function setMe(me) {
  state.me = { user: me.user, role: me.role === "operator" ? "operator" : "viewer" };
  $("me-user").textContent = state.me.user;
  const role = $("me-role");
  role.textContent = state.me.role;
  role.dataset.role = state.me.role;
  $("viewer-note").hidden = state.me.role !== "viewer";
  for (const dev of state.devices.values()) renderDevice(dev);
}

const isOperator = () => state.me !== null && state.me.role === "operator";

// ---------------------------------------------------------------- panel full

let fullTimer = null;

function showFull(r) {
  const b = r.body || {};
  const wait = Math.max(1, Math.round(r.retryAfter ?? 10));
  let n = null;
  if (Array.isArray(b.online)) n = b.online.length;
  else if (Number.isFinite(b.online)) n = b.online;
  else if (Number.isFinite(b.max_users)) n = b.max_users;
  else if (typeof b.error === "string") {
    const m = b.error.match(/(\d+)/);
    if (m) n = Number(m[1]);
  }
  setConn("full");
  $("main").hidden = true;
  $("full").hidden = false;
  const who = n === null ? "" : ` (${n} people online)`;
  $("full-server").textContent = typeof b.error === "string" && b.error
    ? `The server says: ${b.error}` : "";
  $("full-text").textContent = `The panel is full${who}, retrying in ${wait} s.`;
  let left = wait;
  // Only the first line is announced (role=alert); the countdown is visual.
  const tick = () => {
    left -= 1;
    if (left <= 0) {
      clearInterval(fullTimer);
      $("full-text").textContent = `The panel is full${who}, retrying now…`;
      connect();
      return;
    }
    $("full-text").textContent = `The panel is full${who}, retrying in ${left} s.`;
  };
  clearInterval(fullTimer);
  fullTimer = setInterval(tick, 1000);
}

function hideFull() {
  clearInterval(fullTimer);
  $("full").hidden = true;
  $("main").hidden = false;
}

// ---------------------------------------------------------------- people

async function loadUsers() {
  const r = await api("GET", "/api/users");
  if (r.ok && r.body) {
    if (Number.isFinite(r.body.max_users)) state.maxUsers = r.body.max_users;
    setOnline(Array.isArray(r.body.online) ? r.body.online : []);
  }
  loadPeople(isOperator(), renderPeople);
}

function setOnline(list) {
  state.online = list.filter((p) => p && typeof p === "object");
  renderPeople();
}

function renderPeople() {
  const max = state.maxUsers ? ` of ${state.maxUsers}` : "";
  $("people-count").textContent = `${state.online.length}${max} online`;
  const items = [...state.online]
    .sort((a, b) => String(a.user).localeCompare(String(b.user)))
    .map((p) => {
      const me = state.me && p.user === state.me.user;
      return h("li", { className: me ? "person self" : "person" },
        h("span", { className: "avatar", "aria-hidden": "true" }, initial(p.user)),
        h("span", { className: "who" },
          h("strong", { className: "name" }, fmtValue(p.user)),
          me ? h("span", { className: "you" }, " (you)") : null),
        h("span", { className: "meta" },
          "since ", timeEl(p.since), " · ", h("span", { className: "addr" }, fmtValue(p.addr))),
        isOperator() ? personExtras(p.user, me, renderPeople) : null);
    });
  replace($("people-list"), items.length ? items : h("li", { className: "empty" }, "nobody"));
}

function initial(name) {
  const s = String(name ?? "?").trim();
  return s ? [...s][0].toUpperCase() : "?";
}

const REASONS = { closed: "closed the panel", lost: "connection lost" };

/**
 * A join or leave. `replayed` events arrived while the snapshots loaded; the
 * audit snapshot may already show them as login/leave records.
 */
function applyPresence(d, replayed) {
  if (Array.isArray(d.online)) setOnline(d.online);
  const kind = d.kind === "join" ? "join" : "leave";
  const text = presenceText(kind, d.user, d.addr, d.reason);
  $("presence-last").replaceChildren(document.createTextNode(`${text} · `),
    timeEl(new Date().toISOString()));
  if (replayed && state.auditPresence.has(`${kind}:${d.user}`)) return;
  addFeed(kind, null, text);
}

function presenceText(kind, user, addr, reason) {
  const who = fmtValue(user);
  if (kind === "join") return addr ? `${who} joined from ${addr}` : `${who} joined`;
  const why = REASONS[reason] || (reason ? String(reason) : "");
  return why ? `${who} left (${why})` : `${who} left`;
}

// ---------------------------------------------------------------- devices

/** Replace the device list, keeping the DOM (and focus) of devices that stay. */
function setDevices(entries) {
  const seen = new Set();
  for (const e of entries) {
    if (!e || typeof e.id !== "string") continue;
    seen.add(e.id);
    upsertDevice(e);
  }
  for (const [id, dev] of state.devices) {
    if (!seen.has(id)) {
      dev.el.remove();
      state.devices.delete(id);
    }
  }
  renderDeviceCount();
}

function renderDeviceCount() {
  const n = state.devices.size;
  const up = [...state.devices.values()].filter((d) => d.entry.online).length;
  $("devices-count").textContent = n ? `${up} of ${n} online` : "";
  $("devices-empty").hidden = n > 0 || state.controlOff !== null || !state.based;
  $("device-list").setAttribute("aria-busy", state.based ? "false" : "true");
}

function upsertDevice(entry) {
  let dev = state.devices.get(entry.id);
  if (!dev) {
    dev = deviceView(entry);
    state.devices.set(entry.id, dev);
    const list = $("device-list");
    const after = [...list.children].find((li) => li.dataset.id > entry.id);
    list.insertBefore(dev.el, after || null);
    if (state.based) loadHistory(dev);
  } else {
    dev.entry = { ...dev.entry, ...entry };
  }
  renderDevice(dev);
  return dev;
}

function deviceView(entry) {
  const key = `dev-${entry.id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const dev = {
    entry,
    key,
    rows: new Map(), // entity key -> entityRow() (static/entities.js)
    rowsOf: null, // the entities (as JSON) the rows were built from
    series: new Map(), // entity key -> Series (the last 5 minutes of a number or sensor)
    telemetryAt: null,
    historyLoading: false,
    busy: new Map(), // entity key -> {next}: a command in flight, and the value to send after it
    leaseBusy: false,
    leaseEnd: null, // {holder, reason, by} of the last lease end seen here
    name: h("h3", { className: "dev-name", id: `${key}-name` }),
    ident: h("span", { className: "dev-id" }),
    status: h("span", { className: "dev-status" }),
    since: h("span", { className: "dev-since" }),
    lease: h("p", { className: "lease", id: `${key}-lease` }),
    leaseBtn: h("button", { type: "button", className: "lease-btn" }),
    entities: h("ul", {
      className: "entities", "aria-labelledby": `${key}-name`, "aria-describedby": `${key}-lease`,
    }),
    teleAt: h("p", { className: "tele-at" }),
    result: h("p", { className: "result", "aria-live": "polite" }),
  };
  dev.leaseBtn.addEventListener("click", () => leaseAction(dev));
  dev.el = h("li", { className: "device", "data-id": entry.id, "aria-labelledby": `${key}-name` },
    h("div", { className: "dev-head" }, dev.name, dev.status),
    h("p", { className: "dev-meta" }, dev.ident, " · ", dev.since),
    h("div", { className: "lease-row" }, dev.lease, dev.leaseBtn),
    dev.entities, dev.teleAt, dev.result);
  return dev;
}

/** The lease of a device entry: {holder, since} or null. */
function leaseOf(e) {
  const l = e.lease;
  return l && typeof l === "object" && typeof l.holder === "string" ? l : null;
}

const mine = (lease) => lease !== null && state.me !== null && lease.holder === state.me.user;

const LEASE_REASONS = {
  released: "released",
  idle: "idle too long",
  left: "left the panel",
  lost: "connection lost",
  "device offline": "device offline",
  shutdown: "server stopped",
};

function leaseEndText(end) {
  const why = end.reason === "taken over"
    ? `taken over by ${fmtValue(end.by)}`
    : LEASE_REASONS[end.reason] || fmtValue(end.reason);
  return `${fmtValue(end.holder)}'s lease ended: ${why}`;
}

function renderLease(dev) {
  const lease = leaseOf(dev.entry);
  const el = dev.lease;
  el.dataset.state = lease === null ? "free" : mine(lease) ? "mine" : "held";
  if (lease === null) {
    el.removeAttribute("data-holder");
    const end = dev.leaseEnd;
    if (end) el.dataset.reason = end.reason;
    else el.removeAttribute("data-reason");
    el.replaceChildren(document.createTextNode(end ? `free · ${leaseEndText(end)}` : "free"));
  } else {
    el.dataset.holder = lease.holder;
    el.removeAttribute("data-reason");
    const who = mine(lease) ? "you" : fmtValue(lease.holder);
    el.replaceChildren(document.createTextNode(`held by ${who} since `),
      timeEl(lease.since, { short: true }));
  }
  const btn = dev.leaseBtn;
  btn.hidden = !isOperator();
  btn.dataset.act = mine(lease) ? "release" : "take";
  btn.textContent = mine(lease) ? "Release" : lease === null ? "Take" : "Take over…";
  let why = null;
  if (!dev.entry.online && !mine(lease)) why = "the device is offline";
  else if (dev.leaseBusy) why = "waiting for the server";
  btn.disabled = why !== null;
  if (why) btn.title = why;
  else btn.removeAttribute("title");
}

/** The entities a device declares (their shape is vigil's to check: only what we read here). */
function entitiesOf(e) {
  if (!Array.isArray(e.entities)) return [];
  return e.entities.filter((x) => x && typeof x === "object" && typeof x.key === "string"
    && typeof x.kind === "string" && typeof x.label === "string"
    && (x.kind !== "select" || Array.isArray(x.options))
    && (x.kind !== "number" || (Number.isFinite(x.min) && Number.isFinite(x.max))));
}

/** The state of one entity (null while unknown). */
function stateOf(dev, key) {
  const s = dev.entry.state;
  return s && typeof s === "object" && s[key] !== undefined ? s[key] : null;
}

function setState(dev, key, value) {
  const s = dev.entry.state && typeof dev.entry.state === "object" ? dev.entry.state : {};
  dev.entry.state = { ...s, [key]: value };
}

/** The rows of the device's entities: built when they change, else their states updated. */
function renderEntities(dev) {
  const list = entitiesOf(dev.entry);
  const json = JSON.stringify(list);
  if (dev.rowsOf !== json) {
    dev.rowsOf = json;
    const asked = (row, v) => ask(dev, row, v);
    dev.rows = new Map(list.map((e) => [e.key, entityRow(e, dev.key, asked)]));
    replace(dev.entities, dev.rows.size
      ? [...dev.rows.values()].map((r) => r.el)
      : h("li", { className: "empty" }, "no entities announced"));
    drawCharts(dev);
  }
  for (const [key, row] of dev.rows) {
    // A number or a select keeps showing the value asked for until the device answers.
    if (!dev.busy.has(key) || ONE_AT_A_TIME.has(row.entity.kind)) row.update(stateOf(dev, key));
  }
  gateRows(dev);
}

// Kinds that take one press at a time: disabled while their command is in flight.
// A number or a select stays usable; its newest value is sent when the device has answered.
const ONE_AT_A_TIME = new Set(["switch", "button"]);

/** Enable or disable the controls, with the reason as their title. */
function gateRows(dev) {
  const e = dev.entry;
  const lease = leaseOf(e);
  // Held by someone else: still usable (the server answers 409, shown by the control).
  const held = lease !== null && !mine(lease) ? `held by ${fmtValue(lease.holder)}` : null;
  for (const [key, row] of dev.rows) {
    if (!CONTROLS.has(row.entity.kind)) continue;
    const busy = dev.busy.has(key);
    let why = null;
    if (!state.me) why = "loading…";
    else if (!isOperator()) why = "viewers cannot send commands";
    else if (!e.online) why = "the device is offline";
    else if (busy && ONE_AT_A_TIME.has(row.entity.kind)) why = "waiting for the device";
    row.gate(why, held);
    row.el.setAttribute("aria-busy", busy ? "true" : "false");
  }
}

function seriesOf(dev, key) {
  let series = dev.series.get(key);
  if (!series) {
    series = new Series();
    dev.series.set(key, series);
  }
  return series;
}

function drawCharts(dev) {
  const now = Date.now();
  for (const [key, row] of dev.rows) if (row.chart) row.chart.draw(seriesOf(dev, key), now);
  dev.teleAt.hidden = !dev.telemetryAt;
  if (dev.telemetryAt) {
    dev.teleAt.replaceChildren(document.createTextNode("telemetry at "),
      timeEl(dev.telemetryAt.toISOString()));
  }
}

function renderDevice(dev) {
  const e = dev.entry;
  dev.name.textContent = fmtValue(e.name || e.id);
  dev.ident.textContent = e.id;
  dev.el.classList.toggle("offline", !e.online);
  dev.status.textContent = e.online ? "online" : "offline";
  dev.status.dataset.online = e.online ? "yes" : "no";
  dev.since.replaceChildren(document.createTextNode(e.online ? "up since " : "down since "),
    timeEl(e.since));
  renderLease(dev);
  renderEntities(dev);
}

// Chart redraws: the 5-minute window moves on even while a device is quiet.
setInterval(() => {
  for (const dev of state.devices.values()) drawCharts(dev);
}, 5000);

/** GET /api/devices/{id}/telemetry: the last minutes, so a chart is full at once. */
async function loadHistory(dev) {
  if (dev.historyLoading) return;
  dev.historyLoading = true;
  const r = await api("GET", `/api/devices/${encodeURIComponent(dev.entry.id)}/telemetry`);
  dev.historyLoading = false;
  const metrics = r.ok && r.body && typeof r.body.metrics === "object" ? r.body.metrics : null;
  if (!metrics) return;
  for (const [key, points] of Object.entries(metrics)) {
    if (Array.isArray(points)) seriesOf(dev, key).merge(points);
  }
  drawCharts(dev);
}

/** A reading: its numbers go to the charts (its states came with the device view). */
function addTelemetry(dev, data) {
  const now = Date.now();
  for (const [key, v] of Object.entries(data)) {
    if (typeof v === "number" && Number.isFinite(v)) seriesOf(dev, key).add(now, v);
  }
  dev.telemetryAt = new Date(now);
  drawCharts(dev);
}

function applyDevice(d) {
  const entry = d.device;
  if (!entry || typeof entry.id !== "string") return;
  const was = state.devices.get(entry.id);
  const wasOnline = was ? was.entry.online : null;
  if (!("lease" in entry) && was) entry.lease = was.entry.lease ?? null;
  const dev = upsertDevice(entry);
  const label = `${fmtValue(entry.name || entry.id)} (${entry.id})`;
  if (d.kind === "telemetry" && d.data && typeof d.data === "object") {
    addTelemetry(dev, d.data);
  } else if (d.kind === "online" || d.kind === "offline") {
    dev.entry.online = d.kind === "online";
    renderDevice(dev);
    if (wasOnline !== dev.entry.online) addFeed(d.kind, null, `${label} is ${d.kind}`);
  } else if (d.kind === "lease") {
    applyLease(dev, d, label);
  }
  renderDeviceCount();
}

/** A lease started or ended: the card, the feed, and a word to the holder it was taken from. */
function applyLease(dev, d, label) {
  const holder = fmtValue(d.holder);
  if (d.change === "start") {
    dev.leaseEnd = null;
    addFeed("lease", null, `${holder} holds ${label}`);
  } else if (d.change === "end") {
    dev.leaseEnd = { holder: d.holder, reason: d.reason ?? "released", by: d.by ?? null };
    addFeed("lease-end", null, `${leaseEndText(dev.leaseEnd)} (${label})`);
    if (state.me && d.holder === state.me.user && d.reason === "taken over") {
      setResult(dev, "fail", `${fmtValue(d.by)} took ${dev.entry.id} over from you`);
    }
  }
  renderDevice(dev);
}

/** Take (asking first when someone else holds it) or release the device's lease. */
async function leaseAction(dev) {
  const lease = leaseOf(dev.entry);
  if (mine(lease)) {
    await leaseRequest(dev, "DELETE", undefined);
    return;
  }
  if (lease !== null && !(await confirmTakeOver(dev, lease))) return;
  await leaseRequest(dev, "POST", lease === null ? {} : { take_over: true });
}

async function leaseRequest(dev, method, payload) {
  dev.leaseBusy = true;
  renderLease(dev);
  const r = await api(method, `/api/devices/${encodeURIComponent(dev.entry.id)}/lease`, payload);
  dev.leaseBusy = false;
  if (r.ok && r.body && "lease" in r.body) {
    dev.entry.lease = r.body.lease;
    renderDevice(dev);
  } else if (r.status === 409 && method === "POST" && r.body && typeof r.body.holder === "string") {
    // Taken by someone else meanwhile: ask about that holder instead.
    const lease = { holder: r.body.holder, since: r.body.since };
    dev.entry.lease = lease;
    renderDevice(dev);
    if (await confirmTakeOver(dev, lease)) await leaseRequest(dev, "POST", { take_over: true });
  } else {
    renderLease(dev);
    setResult(dev, "fail", `${method === "DELETE" ? "release" : "take"} → ${errorText(r)}`);
  }
}

/**
 * Show one of index.html's <dialog>s; true if it was closed with its button of value `ok`
 * (Cancel and Escape are false). Focus goes back to `back` afterwards.
 */
function modal(dlg, ok, back) {
  dlg.returnValue = "";
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === ok);
      if (back && back.isConnected) back.focus();
    }, { once: true });
  });
}

/** "alice holds lamp-1 since 10:02 — take over?" in the <dialog>; true if confirmed. */
function confirmTakeOver(dev, lease) {
  $("takeover-text").textContent =
    `${fmtValue(lease.holder)} holds ${dev.entry.id} since ${clockText(lease.since)} — take over?`;
  return modal($("takeover"), "take", dev.leaseBtn);
}

/** "Start pump?" / "Turn Power off?" for an entity that declares `confirm`, with the proof
 * vigil asks for (session.js); true if confirmed. */
async function confirmCommand(dev, e, value, back) {
  const device = `${fmtValue(dev.entry.name || dev.entry.id)} (${dev.entry.id})`;
  $("confirm-title").textContent = question(e, value);
  const action = e.kind === "button" ? e.label : `${e.label} → ${valueText(e, value)}`;
  $("confirm-text").textContent = `${device}: ${action}`;
  $("confirm-ok").textContent = verb(e, value);
  await askProof();
  return modal($("confirm"), "send", back);
}

/** What a person's change of a control asks for: confirmed first where the entity says so. */
async function ask(dev, row, value) {
  const e = row.entity;
  if (e.confirm) {
    const back = row.el.contains(document.activeElement) ? document.activeElement : row.control;
    if (!(await confirmCommand(dev, e, value, back))) {
      row.update(stateOf(dev, e.key)); // cancelled: the control shows the state again
      return;
    }
    sendCommand(dev, e, value, proofHeaders());
    return;
  }
  sendCommand(dev, e, value);
}

const STATUS_TEXT = {
  400: "refused",
  403: "not allowed",
  404: "unknown device",
  409: "refused",
  503: "unavailable",
  504: "no answer in time",
};

/** POST {entity, value}; the answer is shown beside the control, its state on it. */
async function sendCommand(dev, e, value, headers) {
  const busy = dev.busy.get(e.key);
  if (busy) {
    busy.next = value; // sent when the device has answered this one: the newest value wins
    return;
  }
  dev.busy.set(e.key, { next: undefined });
  gateRows(dev);
  const say = (kind, text) => dev.rows.get(e.key)?.say(kind, text);
  const what = valueText(e, value);
  say("pending", e.kind === "button" ? "pressing…" : `sending ${what}…`);
  const t0 = performance.now();
  const r = await api("POST", `/api/devices/${encodeURIComponent(dev.entry.id)}/commands`,
    { entity: e.key, value }, { headers });
  const ms = Math.round(performance.now() - t0);
  const { next } = dev.busy.get(e.key);
  dev.busy.delete(e.key);
  const body = r.body && typeof r.body === "object" ? r.body : {};
  if (r.status === 409 && typeof body.holder === "string") {
    dev.entry.lease = { holder: body.holder, since: body.since };
  }
  if (r.status === 200 && body.ok === true) {
    if (e.kind === "button") say("ok", `pressed: ok (${ms} ms)`);
    else {
      const now = body.state === undefined ? value : body.state;
      setState(dev, e.key, now);
      say("ok", `${valueText(e, now)}: ok (${ms} ms)`);
    }
  } else if (body.ok === false) {
    say("fail", `${what}: failed: ${fmtValue(body.error)} (${ms} ms)`);
  } else {
    const why = STATUS_TEXT[r.status] || (r.status ? `error ${r.status}` : "network error");
    say("fail", typeof body.error === "string" ? `${why}: ${body.error}` : why);
  }
  const row = dev.rows.get(e.key);
  const refocus = row && row.control && document.activeElement === document.body;
  renderDevice(dev);
  if (refocus && row.control.isConnected) row.control.focus();
  if (next !== undefined) sendCommand(dev, e, next);
}

/** A word about the device's lease on its card ("bob took lamp-1 over from you"). */
function setResult(dev, kind, text) {
  dev.result.dataset.kind = kind;
  dev.result.replaceChildren(document.createTextNode(text), " · ",
    timeEl(new Date().toISOString()));
}

// ---------------------------------------------------------------- activity

async function loadAudit() {
  const r = await api("GET", "/api/audit?limit=50");
  if (!r.ok || !r.body || !Array.isArray(r.body.records)) {
    if (r.status) console.warn("vigil: audit log unavailable:", errorText(r));
    return;
  }
  let recs = r.body.records.filter((x) => x && typeof x === "object");
  // Show newest first whatever order the server sends.
  const t = (x) => Date.parse(x.time);
  if (recs.length > 1 && t(recs[0]) < t(recs[recs.length - 1])) recs = recs.reverse();
  state.feedRows.clear();
  state.feedCommands.clear();
  state.auditPresence = new Set(recs
    .filter((x) => x.type === "login" || x.type === "leave")
    .map((x) => `${x.type === "login" ? "join" : "leave"}:${x.user}`));
  $("feed").replaceChildren();
  for (const rec of [...recs].reverse()) {
    if (rec.type === "command") addCommand(rec);
    else addFeed(...auditRow(rec));
  }
}

function auditRow(rec) {
  const who = fmtValue(rec.user);
  switch (rec.type) {
    case "login":
      return ["join", null, rec.addr ? `${who} signed in from ${rec.addr}` : `${who} signed in`,
        rec.time];
    case "leave":
      return ["leave", null, presenceText("leave", rec.user, null, rec.reason), rec.time];
    case "chat":
      return ["chat", null, `${who} said: ${fmtValue(rec.text)}`, rec.time];
    case "lease":
      return rec.change === "start"
        ? ["lease", null, `${who} holds ${fmtValue(rec.device)}`, rec.time]
        : ["lease-end", null, `${leaseEndText({ holder: rec.user, reason: rec.reason,
          by: rec.by })} (${fmtValue(rec.device)})`, rec.time];
    default: {
      const rest = Object.entries(rec)
        .filter(([k]) => !["time", "type", "user", "seq"].includes(k))
        .map(([k, v]) => `${k}=${fmtValue(v)}`)
        .join(" ");
      const head = rec.user == null ? fmtValue(rec.type) : `${who}: ${fmtValue(rec.type)}`;
      return ["other", null, rest ? `${head} ${rest}` : head, rec.time];
    }
  }
}

/** The entity `key` of device `id` as the panel knows it, or null. */
function entityOf(id, key) {
  const dev = state.devices.get(id);
  return (dev && entitiesOf(dev.entry).find((e) => e.key === key)) || null;
}

/**
 * "bob set lamp-1 brightness 40 % → ok, 4 ms", "vigil set lamp-1 power off: safe state:
 * alice lost → ok", "bob pressed pump-1 flush → sent…": for command events and audit records
 * (records from before entities name an `action` instead, shown as it was).
 */
function commandText(c) {
  const e = entityOf(c.device, c.entity);
  const where = `${fmtValue(c.device)} ${fmtValue(c.entity ?? c.action)}`;
  let text;
  if (e && e.kind === "button") text = `${fmtValue(c.user)} pressed ${where}`;
  else {
    const value = !("value" in c) ? "" : ` ${e ? valueText(e, c.value) : fmtValue(c.value)}`;
    text = `${fmtValue(c.user)} set ${where}${value}`;
  }
  if (typeof c.reason === "string" && c.reason) text += `: ${c.reason}`;
  if (c.phase === "issued") return `${text} → sent…`;
  if (c.ok === true) {
    text += " → ok";
    if (e && e.kind !== "button" && "state" in c && c.state !== c.value) {
      text += ` (now ${valueText(e, c.state)})`;
    }
  } else if (c.ok === false || c.phase === "failed") {
    text += ` → failed: ${fmtValue(c.error ?? "error")}`;
    if (c.status && c.status !== 200) text += ` [${c.status}]`;
  }
  if (Number.isFinite(c.latency_ms)) text += `, ${c.latency_ms} ms`;
  return text;
}

/** A command event or record in the feed; it is said again when the devices change. */
function addCommand(c) {
  const kind = c.phase === "issued" ? "pending" : c.ok ? "command" : "fail";
  addFeed(kind, c.id ?? null, commandText(c), c.time);
  if (c.id !== undefined && c.id !== null) state.feedCommands.set(String(c.id), c);
}

/**
 * The feed's commands in the words of the devices as now known: the audit log can come
 * before the devices do, and a command names an entity that only they describe.
 */
function sayCommandsAgain() {
  for (const [id, c] of state.feedCommands) {
    const row = state.feedRows.get(id);
    if (row) row.querySelector(".ev-text").textContent = commandText(c);
    else state.feedCommands.delete(id);
  }
}

/** A command in the feed; its result's state on the control at once, for everyone. */
function applyCommand(c) {
  addCommand(c);
  const dev = state.devices.get(c.device);
  const e = entityOf(c.device, c.entity);
  if (dev && e && e.kind !== "button" && c.phase === "result" && c.ok && "state" in c) {
    setState(dev, e.key, c.state);
    renderEntities(dev);
  }
}

/** Put a row at the top of the feed, replacing the row of the same command id. */
function addFeed(kind, id, text, time) {
  const feed = $("feed");
  const iso = time ?? new Date().toISOString();
  const key = id === null || id === undefined ? null : String(id);
  const old = key === null ? null : state.feedRows.get(key);
  const row = h("li", { className: `ev ev-${kind}` },
    timeEl(iso), " ", h("span", { className: "ev-text" }, text));
  // A command's result replaces its "sent…" row and moves to the top: newest first.
  if (old) old.remove();
  feed.prepend(row);
  if (key !== null) state.feedRows.set(key, row);
  while (feed.children.length > FEED_MAX) {
    const last = feed.lastElementChild;
    for (const [k, v] of state.feedRows) if (v === last) state.feedRows.delete(k);
    last.remove();
  }
}

// ---------------------------------------------------------------- chat

async function loadChat() {
  const r = await api("GET", "/api/chat");
  if (r.ok && r.body && Array.isArray(r.body.messages)) {
    for (const m of r.body.messages) addChat(m);
  }
}

function addChat(m) {
  if (!m || typeof m !== "object" || typeof m.text !== "string") return;
  const key = m.id === undefined || m.id === null ? null : String(m.id);
  if (key !== null) {
    if (state.chatIds.has(key)) return;
    state.chatIds.add(key);
  }
  const log = $("chat-log");
  const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const mine = state.me && m.user === state.me.user;
  log.append(h("li", { className: mine ? "msg mine" : "msg" },
    h("span", { className: "msg-head" },
      h("strong", { className: "msg-user" }, fmtValue(m.user)), " ", timeEl(m.time)),
    h("span", { className: "msg-text" }, m.text)));
  while (log.children.length > CHAT_MAX) log.firstElementChild.remove();
  if (stick || mine) log.scrollTop = log.scrollHeight;
}

function wireChat() {
  const form = $("chat-form");
  const input = $("chat-text");
  const err = $("chat-error");
  const left = () => {
    $("chat-left").textContent = String(500 - [...input.value].length);
  };
  input.addEventListener("input", left);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    if ([...text].length > 500) {
      err.hidden = false;
      err.textContent = "A message can have at most 500 characters.";
      return;
    }
    const send = $("chat-send");
    send.disabled = true;
    const r = await api("POST", "/api/chat", { text });
    send.disabled = false;
    if (r.ok) {
      err.hidden = true;
      input.value = "";
      left();
      if (r.body && typeof r.body === "object") addChat(r.body);
    } else {
      err.hidden = false;
      err.textContent = `Not sent: ${errorText(r)}`;
    }
    input.focus();
  });
}

// ---------------------------------------------------------------- start

$("full-now").addEventListener("click", () => {
  clearInterval(fullTimer);
  $("full-text").textContent = "Retrying now…";
  connect();
});
wireChat();
wireLogout(() => stream && stream.stop());
connect();
// The panel shows once the first snapshot has filled it in (applyReset), so that nothing
// jumps as the devices arrive above the rest on a phone; at the latest after READY_MS.
setTimeout(shown, READY_MS);
