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

import { api, errorText, offMessage, signedOutText } from "./api.js";
import { Series } from "./chart.js";
import { $, clockText, fmtValue, h, replace, resay, said, timeEl } from "./dom.js";
import { CONTROLS, entityRow, question, valueText, verb } from "./entities.js";
import { LANGS, locale, msgKey, preferred, remember, t, translate, tx, use } from "./i18n.js";
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
  connecting: msgKey("conn.connecting"),
  connected: msgKey("conn.connected"),
  reconnecting: msgKey("conn.reconnecting"),
  offline: msgKey("conn.offline"),
  full: msgKey("conn.full"),
  signedout: msgKey("conn.signedout"),
};

function setConn(s) {
  const el = $("conn");
  if (el.dataset.state === s) return;
  el.dataset.state = s;
  said($("conn-text"), () => (CONN_TEXT[s] ? t(CONN_TEXT[s]) : s));
}

function showStreamState() {
  setConn(navigator.onLine === false ? "offline" : streamState);
}

/** The banner above the panel: text() its words, or null to hide it. */
function banner(text) {
  const el = $("banner");
  el.hidden = !text;
  said(el, text || (() => ""));
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
    banner(null);
    hideFull();
    setMe(r.body);
    await showSession(); // before the snapshot shows the panel: the line is in when it does
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
    banner(() => signedOutText(r));
    return;
  }
  const wait = r.retryAfter ?? backoff();
  setConn(navigator.onLine === false ? "offline" : "reconnecting");
  banner(() => t("banner.unreachable", { why: errorText(r), n: wait }));
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
  said(off, () => controlOffText(state.controlOff));
  setDevices(Array.isArray(data.devices) ? data.devices : []);
  resay($("feed")); // the feed's commands in the words of the devices as now known
  state.based = true;
  shown();
  for (const dev of state.devices.values()) loadHistory(dev);
  if (!initial) resync();
}

/** Why there are no devices, in the panel's words; what to type or configure as code. */
function controlOffText(off) {
  if (off === null) return "";
  const { key, code, words } = offMessage(off);
  const codes = Object.fromEntries(Object.entries(code).map(([k, v]) => [k, h("code", {}, v)]));
  return tx(key, { ...words, ...codes });
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
  role.textContent = t(ROLES[state.me.role]);
  role.dataset.role = state.me.role;
  $("viewer-note").hidden = state.me.role !== "viewer";
  for (const dev of state.devices.values()) renderDevice(dev);
}

const ROLES = { operator: msgKey("role.operator"), viewer: msgKey("role.viewer") };

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
  const full = () => (n === null ? t("full.text") : t("full.text.count", { n }));
  said($("full-text"), () => t("full.wait", { full: full(), n: wait }));
  let left = wait;
  // Only the first line is announced (role=alert); the countdown is visual.
  const tick = () => {
    left -= 1;
    if (left <= 0) {
      clearInterval(fullTimer);
      said($("full-text"), () => t("full.now", { full: full() }));
      connect();
      return;
    }
    said($("full-text"), () => t("full.wait", { full: full(), n: left }));
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
  const n = state.online.length;
  $("people-count").textContent = state.maxUsers
    ? t("people.count.max", { n, max: state.maxUsers }) : t("people.count", { n });
  const items = [...state.online]
    .sort((a, b) => String(a.user).localeCompare(String(b.user)))
    .map((p) => {
      const me = state.me && p.user === state.me.user;
      return h("li", { className: me ? "person self" : "person" },
        h("span", { className: "avatar", "aria-hidden": "true" }, initial(p.user)),
        h("span", { className: "who" },
          h("strong", { className: "name" }, fmtValue(p.user)),
          me ? h("span", { className: "you" }, t("people.you")) : null),
        h("span", { className: "meta" },
          tx("people.since", { time: timeEl(p.since) }), " · ",
          h("span", { className: "addr" }, fmtValue(p.addr))),
        isOperator() ? personExtras(p.user, me, renderPeople) : null);
    });
  replace($("people-list"), items.length ? items
    : h("li", { className: "empty" }, t("people.nobody")));
}

function initial(name) {
  const s = String(name ?? "?").trim();
  return s ? [...s][0].toUpperCase() : "?";
}

const REASONS = { closed: msgKey("leave.closed"), lost: msgKey("leave.lost") };

/**
 * A join or leave. `replayed` events arrived while the snapshots loaded; the
 * audit snapshot may already show them as login/leave records.
 */
function applyPresence(d, replayed) {
  if (Array.isArray(d.online)) setOnline(d.online);
  const kind = d.kind === "join" ? "join" : "leave";
  const text = () => presenceText(kind, d.user, d.addr, d.reason);
  const at = new Date().toISOString();
  said($("presence-last"), () => [text(), " · ", timeEl(at)]);
  if (replayed && state.auditPresence.has(`${kind}:${d.user}`)) return;
  addFeed(kind, null, text);
}

function presenceText(kind, user, addr, reason) {
  const who = fmtValue(user);
  if (kind === "join") return addr ? t("join.from", { who, addr }) : t("join", { who });
  const why = REASONS[reason] ? t(REASONS[reason]) : reason ? String(reason) : "";
  return why ? t("leave.why", { who, why }) : t("leave", { who });
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
  $("devices-count").textContent = n ? t("devices.count", { up, n }) : "";
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
  released: msgKey("lease.end.released"),
  idle: msgKey("lease.end.idle"),
  left: msgKey("lease.end.left"),
  lost: msgKey("lease.end.lost"),
  "device offline": msgKey("lease.end.offline"),
  shutdown: msgKey("lease.end.shutdown"),
};

function leaseEndText(end) {
  const why = end.reason === "taken over"
    ? t("lease.end.taken", { by: fmtValue(end.by) })
    : LEASE_REASONS[end.reason] ? t(LEASE_REASONS[end.reason]) : fmtValue(end.reason);
  return t("lease.end", { who: fmtValue(end.holder), why });
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
    el.replaceChildren(end ? t("lease.free.after", { end: leaseEndText(end) }) : t("lease.free"));
  } else {
    el.dataset.holder = lease.holder;
    el.removeAttribute("data-reason");
    const since = timeEl(lease.since, { short: true });
    replace(el, mine(lease) ? tx("lease.mine", { since })
      : tx("lease.held", { who: fmtValue(lease.holder), since }));
  }
  const btn = dev.leaseBtn;
  btn.hidden = !isOperator();
  btn.dataset.act = mine(lease) ? "release" : "take";
  btn.textContent = mine(lease) ? t("lease.release") : lease === null ? t("lease.take")
    : t("lease.takeover");
  let why = null;
  if (!dev.entry.online && !mine(lease)) why = t("why.offline");
  else if (dev.leaseBusy) why = t("why.server");
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
      : h("li", { className: "empty" }, t("devices.noentities")));
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
  const held = lease !== null && !mine(lease)
    ? t("why.held", { who: fmtValue(lease.holder) }) : null;
  for (const [key, row] of dev.rows) {
    if (!CONTROLS.has(row.entity.kind)) continue;
    const busy = dev.busy.has(key);
    let why = null;
    if (!state.me) why = t("why.loading");
    else if (!isOperator()) why = t("why.viewer");
    else if (!e.online) why = t("why.offline");
    else if (busy && ONE_AT_A_TIME.has(row.entity.kind)) why = t("why.device");
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
    replace(dev.teleAt, tx("devices.telemetry", { time: timeEl(dev.telemetryAt.toISOString()) }));
  }
}

function renderDevice(dev) {
  const e = dev.entry;
  dev.name.textContent = fmtValue(e.name || e.id);
  dev.ident.textContent = e.id;
  dev.el.classList.toggle("offline", !e.online);
  dev.status.textContent = e.online ? t("device.online") : t("device.offline");
  dev.status.dataset.online = e.online ? "yes" : "no";
  const time = timeEl(e.since);
  replace(dev.since, e.online ? tx("device.up", { time }) : tx("device.down", { time }));
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
  const label = t("device.label", { name: fmtValue(entry.name || entry.id), id: entry.id });
  if (d.kind === "telemetry" && d.data && typeof d.data === "object") {
    addTelemetry(dev, d.data);
  } else if (d.kind === "online" || d.kind === "offline") {
    dev.entry.online = d.kind === "online";
    renderDevice(dev);
    if (wasOnline !== dev.entry.online) {
      const on = dev.entry.online;
      addFeed(d.kind, null, () => (on ? t("feed.online", { device: label })
        : t("feed.offline", { device: label })));
    }
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
    addFeed("lease", null, () => t("feed.holds", { who: holder, device: label }));
  } else if (d.change === "end") {
    const end = { holder: d.holder, reason: d.reason ?? "released", by: d.by ?? null };
    dev.leaseEnd = end;
    addFeed("lease-end", null, () => t("feed.ended", { end: leaseEndText(end), device: label }));
    if (state.me && d.holder === state.me.user && d.reason === "taken over") {
      const id = dev.entry.id;
      setResult(dev, "fail", () => t("lease.takenfromyou", { who: fmtValue(d.by), device: id }));
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
    const what = method === "DELETE" ? msgKey("lease.failed.release") : msgKey("lease.failed.take");
    setResult(dev, "fail", () => t(what, { why: errorText(r, dev.entry.id) }));
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
  said($("takeover-text"), () => t("takeover.text",
    { who: fmtValue(lease.holder), device: dev.entry.id, since: clockText(lease.since) }));
  return modal($("takeover"), "take", dev.leaseBtn);
}

/** "Start pump?" / "Turn Power off?" for an entity that declares `confirm`, with the proof
 * vigil asks for (session.js); true if confirmed. */
async function confirmCommand(dev, e, value, back) {
  const device = () => t("device.label",
    { name: fmtValue(dev.entry.name || dev.entry.id), id: dev.entry.id });
  said($("confirm-title"), () => question(e, value));
  said($("confirm-text"), () => (e.kind === "button"
    ? t("confirm.text.press", { device: device(), label: e.label })
    : t("confirm.text", { device: device(), label: e.label, value: valueText(e, value) })));
  said($("confirm-ok"), () => verb(e, value));
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
  const what = () => valueText(e, value);
  say("pending", () => (e.kind === "button" ? t("command.pressing")
    : t("command.sending", { value: what() })));
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
    if (e.kind === "button") say("ok", () => t("command.pressed", { ms }));
    else {
      const now = body.state === undefined ? value : body.state;
      setState(dev, e.key, now);
      say("ok", () => t("command.ok", { value: valueText(e, now), ms }));
    }
  } else if (body.ok === false) {
    const error = fmtValue(body.error);
    say("fail", () => t("command.failed", { value: what(), why: error, ms }));
  } else {
    say("fail", () => errorText(r, dev.entry.id));
  }
  const row = dev.rows.get(e.key);
  const refocus = row && row.control && document.activeElement === document.body;
  renderDevice(dev);
  if (refocus && row.control.isConnected) row.control.focus();
  if (next !== undefined) sendCommand(dev, e, next);
}

/** A word about the device's lease on its card ("bob took lamp-1 over from you"): text(). */
function setResult(dev, kind, text) {
  dev.result.dataset.kind = kind;
  const at = new Date().toISOString();
  said(dev.result, () => [text(), " · ", timeEl(at)]);
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
  const at = (x) => Date.parse(x.time);
  if (recs.length > 1 && at(recs[0]) < at(recs[recs.length - 1])) recs = recs.reverse();
  state.feedRows.clear();
  state.auditPresence = new Set(recs
    .filter((x) => x.type === "login" || x.type === "leave")
    .map((x) => `${x.type === "login" ? "join" : "leave"}:${x.user}`));
  $("feed").replaceChildren();
  for (const rec of [...recs].reverse()) {
    if (rec.type === "command") addCommand(rec);
    else addFeed(...auditRow(rec));
  }
}

/** An audit record in the feed: [kind, id, text(), time]. */
function auditRow(rec) {
  const who = fmtValue(rec.user);
  const device = fmtValue(rec.device);
  switch (rec.type) {
    case "login":
      return ["join", null, () => (rec.addr ? t("login.from", { who, addr: rec.addr })
        : t("login", { who })), rec.time];
    case "leave":
      return ["leave", null, () => presenceText("leave", rec.user, null, rec.reason), rec.time];
    case "chat":
      return ["chat", null, () => t("feed.said", { who, text: fmtValue(rec.text) }), rec.time];
    case "lease":
      return rec.change === "start"
        ? ["lease", null, () => t("feed.holds", { who, device }), rec.time]
        : ["lease-end", null, () => t("feed.ended", {
          end: leaseEndText({ holder: rec.user, reason: rec.reason, by: rec.by }), device,
        }), rec.time];
    case "device_refused":
      return ["fail", null, () => t("feed.refused",
        { device, addr: fmtValue(rec.addr), why: fmtValue(rec.reason) }), rec.time];
    default: {
      const rest = Object.entries(rec)
        .filter(([k]) => !["time", "type", "user", "seq"].includes(k))
        .map(([k, v]) => `${k}=${fmtValue(v)}`)
        .join(" ");
      const head = rec.user == null ? fmtValue(rec.type) : `${who}: ${fmtValue(rec.type)}`;
      return ["other", null, () => (rest ? `${head} ${rest}` : head), rec.time];
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
  const p = { who: fmtValue(c.user), device: fmtValue(c.device),
    entity: fmtValue(c.entity ?? c.action) };
  let text;
  if (e && e.kind === "button") text = t("cmd.press", p);
  else if (!("value" in c)) text = t("cmd.set", p);
  else text = t("cmd.set.value", { ...p, value: e ? valueText(e, c.value) : fmtValue(c.value) });
  if (typeof c.reason === "string" && c.reason) {
    text = t("cmd.reason", { text, reason: reasonText(c.reason) });
  }
  if (c.phase === "issued") return t("cmd.sent", { text });
  if (c.ok === true) {
    text = e && e.kind !== "button" && "state" in c && c.state !== c.value
      ? t("cmd.ok.now", { text, state: valueText(e, c.state) }) : t("cmd.ok", { text });
  } else if (c.ok === false || c.phase === "failed") {
    text = c.error == null ? t("cmd.failed.plain", { text })
      : t("cmd.failed", { text, why: fmtValue(c.error) });
    if (c.status && c.status !== 200) text = t("cmd.status", { text, status: String(c.status) });
  }
  if (Number.isFinite(c.latency_ms)) text = t("cmd.ms", { text, ms: c.latency_ms });
  return text;
}

/** Why vigil sent a command itself: "safe state: alice lost" (server/core/commands.py). */
function reasonText(reason) {
  const m = /^safe state: (.+) ([a-z ]+)$/.exec(reason);
  if (!m || !SAFE[m[2]]) return reason;
  return t(SAFE[m[2]], { who: m[1] });
}

// How the holder vanished, for the safe state vigil sends then (server/people/leases.py, End).
const SAFE = {
  lost: msgKey("cmd.safe.lost"),
  left: msgKey("cmd.safe.left"),
  idle: msgKey("cmd.safe.idle"),
};

/**
 * A command event or record in the feed. Its words are said again (resay) when the
 * devices change: the audit log can come before the devices do, and a command names an
 * entity that only they describe.
 */
function addCommand(c) {
  const kind = c.phase === "issued" ? "pending" : c.ok ? "command" : "fail";
  addFeed(kind, c.id ?? null, () => commandText(c), c.time);
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

/** Put a row (text(): its words) at the top of the feed, replacing that of the same command. */
function addFeed(kind, id, text, time) {
  const feed = $("feed");
  const iso = time ?? new Date().toISOString();
  const key = id === null || id === undefined ? null : String(id);
  const old = key === null ? null : state.feedRows.get(key);
  const row = h("li", { className: `ev ev-${kind}` },
    timeEl(iso), " ", said(h("span", { className: "ev-text" }), text));
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
    const n = 500 - [...input.value].length;
    said($("chat-hint"), () => t("chat.left", { n }));
  };
  left();
  input.addEventListener("input", left);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    if ([...text].length > 500) {
      err.hidden = false;
      said(err, () => t("chat.toolong", { n: 500 }));
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
      said(err, () => t("chat.notsent", { why: errorText(r) }));
    }
    input.focus();
  });
}

// ---------------------------------------------------------------- language

/** The switch in the header: each language in its own words; a choice is live and remembered. */
function wireLanguage() {
  const sel = $("lang");
  replace(sel, Object.entries(LANGS).map(([tag, name]) => h("option", { value: tag, lang: tag },
    name)));
  sel.value = locale();
  sel.addEventListener("change", () => {
    remember(use(sel.value));
    relabel();
  });
}

/** Everything on the page again in the language now in use. */
function relabel() {
  translate(document);
  $("lang").value = locale();
  resay(document);
  if (state.me) setMe(state.me); // and the devices
  for (const dev of state.devices.values()) drawCharts(dev); // "telemetry at …"
  renderPeople();
  renderDeviceCount();
}

// ---------------------------------------------------------------- start

$("full-now").addEventListener("click", () => {
  clearInterval(fullTimer);
  said($("full-text"), () => t("full.retrying"));
  connect();
});
use(preferred());
translate(document);
document.documentElement.classList.remove("l10n-pending");
wireChat();
wireLanguage();
wireLogout(() => stream && stream.stop());
connect();
// The panel shows once the first snapshot has filled it in (applyReset), so that nothing
// jumps as the devices arrive above the rest on a phone; at the latest after READY_MS.
setTimeout(shown, READY_MS);
