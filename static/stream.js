// One event stream per browser, shared by all its tabs of the panel.
//
// A browser allows 6 HTTP/1.1 connections per host; an EventSource holds
// one for good, so 6 tabs with a stream each would leave none for anything
// else. Instead one tab, the leader, holds the Web Lock LOCK
// (navigator.locks) and with it the only EventSource; it hands every event
// to its own page and relays it, with its id, over the BroadcastChannel
// CHANNEL to the other tabs. When the leader tab closes, its lock is freed
// and the next tab waiting for it gets it at once: that tab opens its own
// EventSource at /api/events?last_event_id=N, N the last event id it saw,
// and the server replays what came after N from its ring (or sends a
// `reset` when N is too old), so nothing is missed in the hand-over.
//
// A tab that starts as a follower asks the leader for a snapshot (the
// state a `reset` carries, from the leader's page, and the id it is at);
// the channel keeps the leader's order, so the events relayed after it
// follow it exactly.
//
// Browsers without Web Locks or BroadcastChannel get one EventSource per
// tab, as before.
//
// Events are handed on in id order: an event whose id is not above the
// last one seen (a replay overlapping what a tab already has) is dropped;
// a `reset` is always handed on, and so is `signedout` (this stream's session ended: it
// carries no id).

const LOCK = "vigil-event-stream";
const CHANNEL = "vigil-events";
const KINDS = ["presence", "device", "command", "chat", "reset", "signedout"];

/**
 * Start the shared stream. Callbacks (each called in this tab only):
 * - event(kind, data, id, initial): one event; `initial` is true for the
 *   `reset` that opens a fresh stream or a follower's snapshot (the state
 *   to start from), false for a reset that means events were lost;
 * - state(s): the stream's state: "connecting", "connected", "reconnecting";
 * - closed(): this tab's own EventSource was given up by the browser (an
 *   HTTP error): the caller checks /api/me and calls reopen();
 * - snapshot(): the state a follower starts from ({online, devices,
 *   control_off}), or null before this page has one.
 * Returns {reopen(), stop(), lastId()}.
 */
export function startStream(cb) {
  let lastId = null; // the last event id seen since this tab had a state to start from
  let based = false; // has it had one (an initial reset or a snapshot)?
  let source = null;
  let leader = false;
  let current = "connecting";
  const shared = "locks" in navigator && typeof BroadcastChannel === "function";
  const channel = shared ? new BroadcastChannel(CHANNEL) : null;

  function setState(s) {
    current = s;
    cb.state(s);
    if (leader && channel) channel.postMessage({ t: "state", state: s });
  }

  function deliver(kind, data, id, initial) {
    const unnumbered = kind === "reset" || kind === "signedout"; // signedout: no id of its own
    if (!unnumbered && id !== null && lastId !== null && id <= lastId) return;
    if (kind === "reset") based = true;
    // Before it has a state to start from, a tab applies events (they are
    // idempotent) but cannot resume after them: its snapshot is still to come.
    if (based && id !== null && (lastId === null || id > lastId)) lastId = id;
    cb.event(kind, data, id, initial);
  }

  function open() {
    if (source) source.close();
    const resume = lastId !== null;
    const url = resume ? `/api/events?last_event_id=${lastId}` : "/api/events";
    const es = new EventSource(url);
    source = es;
    let fresh = !resume;
    setState("connecting");
    es.onopen = () => {
      if (source === es) setState("connected");
    };
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        source = null;
        setState("reconnecting");
        cb.closed();
      } else {
        setState("reconnecting");
      }
    };
    for (const kind of KINDS) {
      es.addEventListener(kind, (ev) => {
        if (source !== es) return;
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          console.warn("vigil: unparseable %s event", kind);
          return;
        }
        if (data === null || typeof data !== "object") return;
        const id = /^\d+$/.test(ev.lastEventId) ? Number(ev.lastEventId) : null;
        const initial = kind === "reset" && fresh;
        fresh = false;
        deliver(kind, data, id, initial);
        if (channel) channel.postMessage({ t: "event", kind, data, id });
      });
    }
  }

  function follow() {
    channel.onmessage = (ev) => {
      const m = ev.data;
      if (!m || typeof m !== "object") return;
      if (leader) {
        if (m.t === "hello") {
          const snap = cb.snapshot();
          if (snap) channel.postMessage({ t: "snapshot", data: snap, id: lastId, state: current });
        }
        return;
      }
      if (m.t === "event") deliver(m.kind, m.data, m.id, m.kind === "reset" && !based);
      else if (m.t === "state") setState(m.state);
      else if (m.t === "snapshot" && !based) {
        setState(m.state);
        deliver("reset", m.data, m.id, true);
      }
    };
  }

  function lead() {
    leader = true;
    document.documentElement.dataset.streamRole = "leader";
    open();
    return new Promise(() => {}); // hold the lock until this tab goes away
  }

  if (!shared) {
    leader = true;
    document.documentElement.dataset.streamRole = "alone";
    open();
  } else {
    follow();
    navigator.locks.request(LOCK, { ifAvailable: true }, (lock) => {
      if (lock) return lead();
      document.documentElement.dataset.streamRole = "follower";
      channel.postMessage({ t: "hello" });
      navigator.locks.request(LOCK, lead); // queued: ours when the leader goes
      return null;
    });
  }

  return {
    reopen() {
      if (leader) open();
    },
    /** Close this tab's stream for good (logging out): it never reconnects. */
    stop() {
      leader = false;
      if (source) source.close();
      source = null;
    },
    lastId: () => lastId,
  };
}
