// The panel's words in the reader's language.
//
// Every string a person sees comes from one catalog per language,
// static/i18n/<tag>.js: a module whose default export maps a key to a
// message. A message is a string with {name} placeholders, or, for a
// count, an object of plural forms chosen by Intl.PluralRules on the
// parameter `n` ({"one": …, "other": …} in English, {"other": …} in
// Chinese: the forms the language has). Numbers in parameters are
// formatted with Intl.NumberFormat in the language; times by dom.js, with
// locale(). The catalogs are modules imported with this one, so they load
// with the panel's code or not at all (a fetch could meet a 503 of its own
// when the panel is full), and a change of language needs no request.
//
// The language: the one remembered in this browser (localStorage, set by
// the switch in the header), else the first of navigator.languages that
// the panel has (zh, zh-CN, zh-SG and zh-Hans-… read Simplified Chinese;
// zh-TW and zh-HK do not, and go on down the list), else English.
//
// Invariants: keys are written out whole in the code, as t("key", …),
// tx("key", …) or msgKey("key") (for tables of keys), never pieced
// together, so that tests/test_i18n.py can check that every key used is in
// every catalog and every catalog has the same keys and placeholders. A key
// missing at run time shows as the key itself and logs a console error.
//
// Adding a language: its catalog static/i18n/<tag>.js (copy en.js,
// translate the values, keep the keys and {placeholders}, write the plural
// forms the language has) and its line in LANGS below.

import en from "./i18n/en.js";
import zhCN from "./i18n/zh-CN.js";

/** The languages the panel speaks: BCP 47 tag → its name in itself (the switch shows it). */
export const LANGS = { en: "English", "zh-CN": "简体中文" };
const CATALOGS = { en, "zh-CN": zhCN };
const FALLBACK = "en";
const STORE = "vigil.lang";

let lang = FALLBACK;
let catalog = CATALOGS[FALLBACK];
let plurals = new Intl.PluralRules(FALLBACK);
let numbers = new Intl.NumberFormat(FALLBACK);

/** The panel's language for one of a browser's language tags, or null. */
export function match(tag) {
  const t = String(tag).toLowerCase();
  if (t === "en" || t.startsWith("en-")) return "en";
  if (t === "zh" || t === "zh-cn" || t === "zh-sg" || t.startsWith("zh-hans")) return "zh-CN";
  return null;
}

/** The language to start in: remembered, else the browser's, else English. */
export function preferred() {
  let stored = null;
  try {
    stored = localStorage.getItem(STORE);
  } catch {
    // storage off (a privacy setting): follow the browser
  }
  if (stored && Object.hasOwn(CATALOGS, stored)) return stored;
  const wanted = navigator.languages && navigator.languages.length
    ? navigator.languages : [navigator.language || FALLBACK];
  for (const tag of wanted) {
    const found = match(tag);
    if (found) return found;
  }
  return FALLBACK;
}

/** Make `tag` the panel's language (English for a tag it has no catalog of); the tag used. */
export function use(tag) {
  lang = Object.hasOwn(CATALOGS, tag) ? tag : FALLBACK;
  catalog = CATALOGS[lang];
  plurals = new Intl.PluralRules(lang);
  numbers = new Intl.NumberFormat(lang);
  document.documentElement.lang = lang;
  return lang;
}

/** Remember `tag` as this browser's choice. */
export function remember(tag) {
  try {
    localStorage.setItem(STORE, tag);
  } catch {
    // storage off: the choice lasts until the page is left
  }
}

/** The panel's language (a BCP 47 tag, for Intl). */
export const locale = () => lang;

/** A number in the panel's language ("1,234.5"; "21.5"). */
export const num = (n) => numbers.format(n);

/** Marks a key written in a table, for the catalog checks; returns it as it is. */
export const msgKey = (key) => key;

/**
 * The message `key` with its {placeholders} filled from `params` (numbers
 * formatted in the language); a plural message takes its form from `n`.
 */
export function t(key, params = {}) {
  let msg = catalog[key];
  if (msg !== null && typeof msg === "object") msg = msg[plurals.select(params.n)] ?? msg.other;
  if (typeof msg !== "string") {
    console.error("vigil: no message %s in the %s catalog", key, lang);
    return key;
  }
  return msg.replace(/\{(\w+)\}/g, (all, name) => {
    const v = params[name];
    if (v === undefined || v === null) return all;
    return typeof v === "number" ? numbers.format(v) : String(v);
  });
}

/**
 * The message `key` as children for h() or replace(): like t(), but a parameter that is a
 * DOM node (a <time>) goes in as that node.
 */
export function tx(key, params = {}) {
  const words = {};
  const nodes = {};
  for (const [k, v] of Object.entries(params)) (v instanceof Node ? nodes : words)[k] = v;
  return t(key, words).split(/(\{\w+\})/).filter((part) => part !== "")
    .map((part) => {
      const m = /^\{(\w+)\}$/.exec(part);
      return m && nodes[m[1]] ? nodes[m[1]] : part;
    });
}

/** Put the messages into the page's static markup: data-i18n (text), data-i18n-label. */
export function translate(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  document.title = t("page.title");
}
