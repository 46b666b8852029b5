// Small DOM and formatting helpers.
//
// Invariant: text that comes from people or devices only ever reaches the
// page through createTextNode / textContent (h() turns every string child
// into a text node); nothing here sets innerHTML or a style attribute.
// Times are formatted in the panel's language (i18n.js).

import { locale } from "./i18n.js";

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

// Formatters of the panel's language (i18n.js), made again when it changes.
let formats = null;
function fmt() {
  if (!formats || formats.locale !== locale()) {
    const tag = locale();
    formats = {
      locale: tag,
      time: new Intl.DateTimeFormat(tag, { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
      dateTime: new Intl.DateTimeFormat(tag, {
        month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      }),
      full: new Intl.DateTimeFormat(tag, { dateStyle: "full", timeStyle: "long" }),
      clock: new Intl.DateTimeFormat(tag, { hour: "2-digit", minute: "2-digit" }),
    };
  }
  return formats;
}

function showTime(el, d, short) {
  const f = fmt();
  const today = d.toDateString() === new Date().toDateString();
  el.title = f.full.format(d);
  el.textContent = !today ? f.dateTime.format(d) : short ? f.clock.format(d) : f.time.format(d);
}

/**
 * A <time> element showing iso in local time: the time of day when it is
 * today (hours and minutes only with `short`), else the date and time; the
 * full timestamp is in the title. Unparseable values are shown as given.
 */
export function timeEl(iso, { short = false } = {}) {
  const d = parseTime(iso);
  if (!d) return h("time", { className: "t" }, iso == null ? "" : String(iso));
  const el = h("time", { className: "t", datetime: d.toISOString(), "data-short": short });
  showTime(el, d, short);
  return el;
}

/** "10:02" (local), or the date and time when not today; iso as given if unparseable. */
export function clockText(iso) {
  const d = parseTime(iso);
  if (!d) return iso == null ? "" : String(iso);
  return d.toDateString() === new Date().toDateString()
    ? fmt().clock.format(d) : fmt().dateTime.format(d);
}

/**
 * Fill el with what `say()` returns (children as for h()), now and again when the
 * language changes (resay): for messages that stay on the page in sentences of their own.
 */
export function said(el, say) {
  el.l10n = say;
  el.dataset.l10n = "";
  replace(el, say());
  return el;
}

/** Say again everything said() in root, and every time in the panel's language. */
export function resay(root) {
  for (const el of root.querySelectorAll("[data-l10n]")) {
    if (typeof el.l10n === "function") replace(el, el.l10n());
  }
  for (const el of root.querySelectorAll("time.t[datetime]")) {
    showTime(el, new Date(el.getAttribute("datetime")), el.hasAttribute("data-short"));
  }
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
