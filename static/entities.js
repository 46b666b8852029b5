// A device's entities on its card: one row each, a control or a reading.
//
// A device declares its entities in its hello (server/link/entities.py, the
// schema); the device view carries them and their `state`. entityRow()
// builds an entity's row once:
// - switch: a button with role=switch and aria-checked; a click asks for
//   the other state;
// - number: a slider and a number input with the unit and the bounds; a
//   value is asked for on `change` (the slider let go, the input left or
//   Enter), never on every tick of a drag; the input is not checked here
//   beyond being a number: vigil refuses what is out of range, and says why;
// - select: a <select>; button: a button (its value is null);
// - sensor: the value and its unit; binary_sensor: a word for its device
//   class (open/closed, motion/clear; on/off without one), never `true`;
//   text_sensor: the text.
// Numbers and sensors also get a chart of the last minutes (chart.js), with
// the unit on its axis.
//
// The row's update(value) shows a new state in place: focus stays, and a
// slider being dragged or a number being typed keeps what the person is
// doing. gate(why, held) enables or disables the control, say() shows the
// outcome of a command next to it. What to do with a value is the caller's
// (`ask(row, value)`): this module sends nothing itself.

import { chart } from "./chart.js";
import { h, said, timeEl } from "./dom.js";
import { msgKey, num, t } from "./i18n.js";

/** Home Assistant's words for a binary sensor's [true, false], by device class. */
const WORDS = {
  battery: [msgKey("binary.battery.true"), msgKey("binary.battery.false")],
  connectivity: [msgKey("binary.connectivity.true"), msgKey("binary.connectivity.false")],
  door: [msgKey("binary.door.true"), msgKey("binary.door.false")],
  garage_door: [msgKey("binary.garage_door.true"), msgKey("binary.garage_door.false")],
  gas: [msgKey("binary.gas.true"), msgKey("binary.gas.false")],
  heat: [msgKey("binary.heat.true"), msgKey("binary.heat.false")],
  light: [msgKey("binary.light.true"), msgKey("binary.light.false")],
  lock: [msgKey("binary.lock.true"), msgKey("binary.lock.false")],
  moisture: [msgKey("binary.moisture.true"), msgKey("binary.moisture.false")],
  motion: [msgKey("binary.motion.true"), msgKey("binary.motion.false")],
  occupancy: [msgKey("binary.occupancy.true"), msgKey("binary.occupancy.false")],
  opening: [msgKey("binary.opening.true"), msgKey("binary.opening.false")],
  plug: [msgKey("binary.plug.true"), msgKey("binary.plug.false")],
  power: [msgKey("binary.power.true"), msgKey("binary.power.false")],
  presence: [msgKey("binary.presence.true"), msgKey("binary.presence.false")],
  problem: [msgKey("binary.problem.true"), msgKey("binary.problem.false")],
  running: [msgKey("binary.running.true"), msgKey("binary.running.false")],
  safety: [msgKey("binary.safety.true"), msgKey("binary.safety.false")],
  smoke: [msgKey("binary.smoke.true"), msgKey("binary.smoke.false")],
  tamper: [msgKey("binary.tamper.true"), msgKey("binary.tamper.false")],
  vibration: [msgKey("binary.vibration.true"), msgKey("binary.vibration.false")],
  window: [msgKey("binary.window.true"), msgKey("binary.window.false")],
};
const ON_OFF = [msgKey("state.on"), msgKey("state.off")];

const CHARTED = new Set(["number", "sensor"]);
export const CONTROLS = new Set(["switch", "button", "number", "select"]);

/** A number as people read it, in the panel's language: 21.5, 40, not 0.30000000000000004. */
function numberText(v) {
  return num(Number(v.toPrecision(6)));
}

/** A value of entity e in words: "on", "40 %", "open", "eco"; "unknown" for null. */
export function valueText(e, v) {
  if (e.kind === "button") return t("state.pressed");
  if (v === null || v === undefined) return t("state.unknown");
  if (e.kind === "switch" && typeof v === "boolean") return t(v ? ON_OFF[0] : ON_OFF[1]);
  if (e.kind === "binary_sensor" && typeof v === "boolean") {
    const [yes, no] = WORDS[e.device_class] || ON_OFF;
    return t(v ? yes : no);
  }
  if (typeof v === "number") return e.unit ? `${numberText(v)} ${e.unit}` : numberText(v);
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** "Turn Power off?", "Set Brightness to 80 %?", "Press Restart?": the question to confirm. */
export function question(e, v) {
  if (typeof e.confirm === "string") return e.confirm;
  const p = { label: e.label, value: valueText(e, v) };
  if (e.kind === "switch") return t("confirm.turn.question", p);
  if (e.kind === "button") return t("confirm.press.question", p);
  return t("confirm.set.question", p);
}

/** The confirming button's text for that question. */
export function verb(e, v) {
  if (e.kind === "switch") return t("confirm.turn", { value: valueText(e, v) });
  return e.kind === "button" ? t("confirm.press") : t("confirm.set");
}

/**
 * One entity's row. `id`: a prefix unique on the page; `ask(row, value)`:
 * what a person's change asks for. Returns the row:
 * {entity, el, chart (or null), control (what takes focus, or null),
 *  update(value), gate(why, held), say(kind, text)}.
 */
export function entityRow(e, id, ask) {
  const key = `${id}-${e.key}`;
  const msg = h("p", { className: "ent-msg", id: `${key}-msg`, "aria-live": "polite" });
  const row = {
    entity: e,
    control: null,
    chart: CHARTED.has(e.kind) ? chart(e.unit || "") : null,
    update: () => {},
    gate: () => {},
    /** The outcome of a command: kind "pending", "ok" or "fail", text() its words. */
    say(kind, text) {
      msg.dataset.kind = kind;
      const at = new Date().toISOString();
      said(msg, () => [text(), " · ", timeEl(at)]);
    },
  };
  const label = (attrs) => h(attrs.for ? "label" : "span",
    { className: "ent-label", id: `${key}-label`, ...attrs }, e.label);
  const builders = { switch: switchRow, button: buttonRow, number: numberRow, select: selectRow };
  const parts = (builders[e.kind] || readingRow)(e, key, row, label, ask);
  row.el = h("li", { className: "entity", "data-key": e.key, "data-kind": e.kind },
    parts, msg, row.chart ? row.chart.el : null);
  return row;
}

/** Disabling with the reason as the title; still pressable but marked when held by another. */
function gateWith(row, els) {
  row.gate = (why, held) => {
    for (const el of els) {
      el.disabled = why !== null;
      const title = why ?? held;
      if (title) el.title = title;
      else el.removeAttribute("title");
      el.classList.toggle("held", why === null && held !== null);
    }
  };
}

function switchRow(e, key, row, label, ask) {
  const btn = h("button", {
    type: "button", className: "switch", role: "switch", "aria-checked": "false",
    "aria-labelledby": `${key}-label`, "aria-describedby": `${key}-msg`,
  }, h("span", { className: "knob", "aria-hidden": "true" }), h("span"));
  let on = null;
  row.control = btn;
  row.update = (v) => {
    on = typeof v === "boolean" ? v : null;
    btn.setAttribute("aria-checked", on ? "true" : "false");
    btn.lastElementChild.textContent = valueText(e, on);
  };
  btn.addEventListener("click", () => ask(row, !on));
  gateWith(row, [btn]);
  return [label({}), h("span", { className: "ent-ctl" }, btn)];
}

function buttonRow(e, key, row, label, ask) {
  const btn = h("button", { type: "button", "aria-describedby": `${key}-msg` },
    e.label);
  row.control = btn;
  btn.addEventListener("click", () => ask(row, null));
  gateWith(row, [btn]);
  return h("span", { className: "ent-ctl wide" }, btn);
}

function numberRow(e, key, row, label, ask) {
  const bounds = { min: e.min, max: e.max, step: e.step ?? "any" };
  const range = h("input", {
    type: "range", id: `${key}-range`, ...bounds, "aria-describedby": `${key}-msg`,
  });
  const unitId = `${key}-unit`;
  const typed = h("input", {
    type: "number", className: "num", id: `${key}-num`, ...bounds, inputmode: "decimal",
    "aria-labelledby": `${key}-label ${unitId}`, "aria-describedby": `${key}-bounds ${key}-msg`,
  });
  const unit = h("span", { className: "unit", id: unitId }, e.unit || "");
  const span = said(h("span", { className: "bounds", id: `${key}-bounds` }),
    () => t("number.bounds", { min: valueText(e, e.min), max: valueText(e, e.max) }));
  // What the person is changing is not overwritten by a state that comes meanwhile.
  let dragging = false;
  let typing = false;
  let current = null;
  row.control = range;
  const show = (v, el) => {
    if (v === null) {
      el.value = el === typed ? "" : String((e.min + e.max) / 2);
    } else el.value = String(v);
  };
  row.update = (v) => {
    current = typeof v === "number" ? v : null;
    if (!dragging) {
      show(current, range);
      range.setAttribute("aria-valuetext", valueText(e, current));
    }
    if (!typing && !dragging) show(current, typed);
  };
  range.addEventListener("input", () => {
    dragging = true;
    typed.value = range.value;
    range.setAttribute("aria-valuetext", valueText(e, Number(range.value)));
  });
  range.addEventListener("change", () => {
    dragging = false;
    ask(row, Number(range.value));
  });
  typed.addEventListener("input", () => {
    typing = true;
  });
  // Let go where it started, or typed back to what it was: no change event, nothing sent.
  range.addEventListener("pointerup", () => {
    dragging = false;
  });
  typed.addEventListener("blur", () => {
    typing = false;
  });
  typed.addEventListener("change", () => {
    typing = false;
    // Not a number (empty, "1e"): nothing to send; show the state again.
    if (typed.value.trim() === "" || !Number.isFinite(typed.valueAsNumber)) row.update(current);
    else ask(row, typed.valueAsNumber);
  });
  gateWith(row, [range, typed]);
  return [label({ for: `${key}-range` }),
    h("span", { className: "ent-ctl number" }, range,
      h("span", { className: "typed" }, typed, unit), span)];
}

function selectRow(e, key, row, label, ask) {
  const sel = h("select", { id: `${key}-select`, "aria-describedby": `${key}-msg` },
    said(h("option", { value: "", disabled: true }), () => t("state.unknown")),
    e.options.map((o) => h("option", { value: o }, o)));
  row.control = sel;
  row.update = (v) => {
    sel.value = typeof v === "string" && e.options.includes(v) ? v : "";
  };
  sel.addEventListener("change", () => ask(row, sel.value));
  gateWith(row, [sel]);
  return [label({ for: `${key}-select` }), h("span", { className: "ent-ctl" }, sel)];
}

function readingRow(e, key, row, label) {
  const val = h("span", { className: "val" });
  const unit = e.kind === "sensor" && e.unit ? h("span", { className: "unit" }, e.unit) : null;
  row.update = (v) => {
    const known = v !== null && v !== undefined;
    val.dataset.state = !known ? "unknown" : typeof v === "boolean" ? String(v) : "known";
    // The unit is its own element: the number alone, then the unit (hidden while unknown).
    val.textContent = unit && typeof v === "number" ? numberText(v) : valueText(e, v);
    if (unit) unit.hidden = !known;
  };
  return [label({}), h("span", { className: "ent-ctl reading" }, val, unit ? " " : null, unit)];
}
