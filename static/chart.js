// Telemetry charts: the last WINDOW_MS of one numeric entity (a sensor, a
// number) as a small inline SVG line (no library; CSP-clean: classes only,
// no style attributes).
//
// The chart is decoration for sighted users: it is aria-hidden, and the
// latest value stays beside it as text. Its lowest and highest values, with
// the entity's unit, are data-min / data-max on the wrapper, which the
// stylesheet shows as the labels of its axis ("19.5 °C", "22 °C").
// A Series keeps at most one point a second (the last value of that
// second), like the server's history, so 5 minutes are at most 300 points.

export const WINDOW_MS = 300000;
const NS = "http://www.w3.org/2000/svg";
const W = 300;
const H = 60;

export class Series {
  constructor() {
    this.points = []; // [epoch ms, value], oldest first
  }

  /** One reading at `t` (epoch ms); a reading in the same second replaces the last. */
  add(t, v) {
    const last = this.points[this.points.length - 1];
    if (last && Math.floor(last[0] / 1000) === Math.floor(t / 1000)) last[1] = v;
    else if (!last || t > last[0]) this.points.push([t, v]);
    this.prune(t);
  }

  /** History from the server (oldest first); readings already here that are newer stay. */
  merge(history) {
    const ok = history.filter((p) => Array.isArray(p) && Number.isFinite(p[0])
      && typeof p[1] === "number" && Number.isFinite(p[1]));
    const end = ok.length ? ok[ok.length - 1][0] : -Infinity;
    const newer = this.points.filter((p) => Math.floor(p[0] / 1000) > Math.floor(end / 1000));
    this.points = [...ok.map((p) => [p[0], p[1]]), ...newer];
    if (this.points.length) this.prune(Math.max(Date.now(), this.points[this.points.length - 1][0]));
  }

  prune(now) {
    const from = now - WINDOW_MS;
    let i = 0;
    while (i < this.points.length && this.points[i][0] < from) i += 1;
    if (i) this.points.splice(0, i);
  }
}

function svgEl(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function label(v) {
  const a = Math.abs(v);
  return String(a >= 100 || Number.isInteger(v) ? Math.round(v) : Number(v.toFixed(a >= 10 ? 1 : 2)));
}

/** A chart: {el, draw(series, now)}; el is the wrapper to put beside the value. */
export function chart(unit) {
  const axis = (v) => (unit ? `${label(v)} ${unit}` : label(v));
  const svg = svgEl("svg", {
    class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
    "aria-hidden": "true", focusable: "false",
  });
  const area = svgEl("path", { class: "spark-area", d: "" });
  const line = svgEl("polyline", { class: "spark-line", points: "" });
  svg.append(area, line);
  const el = document.createElement("span");
  el.className = "chart";
  el.setAttribute("aria-hidden", "true");
  el.append(svg);

  function draw(series, now) {
    series.prune(now);
    const pts = series.points;
    el.dataset.points = String(pts.length);
    if (!pts.length) {
      line.setAttribute("points", "");
      area.setAttribute("d", "");
      el.removeAttribute("data-min");
      el.removeAttribute("data-max");
      return;
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const [, v] of pts) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    el.dataset.min = axis(lo);
    el.dataset.max = axis(hi);
    const span = hi - lo || Math.abs(hi) * 0.1 || 1;
    const top = hi + span * 0.1;
    const bottom = lo - span * 0.1;
    const from = now - WINDOW_MS;
    const xy = pts.map(([t, v]) => {
      const x = ((t - from) / WINDOW_MS) * W;
      const y = H - ((v - bottom) / (top - bottom)) * H;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    line.setAttribute("points", xy.join(" "));
    const first = xy[0].split(",")[0];
    const last = xy[xy.length - 1].split(",")[0];
    area.setAttribute("d", `M${first},${H} L${xy.join(" L")} L${last},${H} Z`);
  }

  return { el, draw };
}
