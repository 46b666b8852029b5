// Small DOM and formatting helpers.
//
// Invariant: text that comes from people or devices only ever reaches the
// page through createTextNode / textContent (h() turns every string child
// into a text node); nothing here sets innerHTML or a style attribute.

/** The element with this id (throws early if index.html and app.js disagree). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
}

/**
 * Create an element. attrs: plain attributes (className → class, dataset
 * via "data-*", booleans add/omit the attribute); children: nodes, strings
 * (as text), numbers, null/undefined/false (skipped) or arrays of those.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "className") el.className = v;
    else if (k.startsWith("on") || k === "style") throw new Error(`no ${k} attributes`);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace all children of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Parse an ISO-8601 string; null when missing or invalid. */
export function parseTime(iso) {
  if (typeof iso !== "string" && typeof iso !== "number") return null;
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

const timeFmt = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

const clockFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/**
 * A <time> element showing iso in local time: the time of day when it is
 * today (hours and minutes only with `short`), else the date and time; the
 * full timestamp is in the title. Unparseable values are shown as given.
 */
export function timeEl(iso, { short = false } = {}) {
  const d = parseTime(iso);
  if (!d) return h("time", { className: "t" }, iso == null ? "" : String(iso));
  const today = d.toDateString() === new Date().toDateString();
  return h("time", { className: "t", datetime: d.toISOString(), title: fullFmt.format(d) },
    !today ? dateTimeFmt.format(d) : short ? clockFmt.format(d) : timeFmt.format(d));
}

/** "10:02" (local), or the date and time when not today; iso as given if unparseable. */
export function clockText(iso) {
  const d = parseTime(iso);
  if (!d) return iso == null ? "" : String(iso);
  return d.toDateString() === new Date().toDateString()
    ? clockFmt.format(d) : dateTimeFmt.format(d);
}

/** A short, single-line text for any JSON value. */
export function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return String(v);
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}
