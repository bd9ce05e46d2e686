// Formatting and DOM helpers shared by the fleet page (app.js) and a car's page (car.js).
//
// Two clocks appear on the pages, and every time says which it is:
// - simulated time: the cars' own event time (a reading's event_time). The demo runs it up to 60x faster than the
//   wall clock, so a "10 min" horizon passes in 10 s; alerts, leads and a car's history are in it;
// - wall clock: this machine's time (the dashboard's updates, the pipeline chart, a dead letter's arrival).

export const $ = (selector) => document.querySelector(selector);

export const SIM = "sim.";          // the short label of a simulated time
export const WALL = "wall clock";   // ... and of a wall-clock one

// ---- small DOM helpers: write only on change ---------------------------------------------------------

export function setText(node, value) {
  const text = value == null ? "" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

export function setData(node, name, value) {
  const text = value == null ? "" : String(value);
  if (node.dataset[name] !== text) node.dataset[name] = text;
}

export function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** Grow or shrink parent's children to `count`, making new ones with `factory`; returns the live list. */
export function syncChildren(parent, count, factory) {
  while (parent.children.length < count) parent.appendChild(factory());
  while (parent.children.length > count) parent.lastElementChild.remove();
  return parent.children;
}

/** A table row factory: `classes` names each cell's class (one <td> per entry). */
export function rowFactory(classes) {
  return () => {
    const tr = document.createElement("tr");
    for (const cls of classes) tr.appendChild(make("td", cls));
    return tr;
  };
}

// ---- formatting ---------------------------------------------------------------------------------------

// The test and the benchmark parse these: plain digits, no thousands separators.
export const plainInt = (v) => (v == null ? "" : String(Math.round(v)));
export const plainRate = (v) => (v == null ? "" : Number(v).toFixed(1));
export const fmtProb = (p) => (p == null ? "" : Number(p).toFixed(2));

const CLOCK = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
const DATE_TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// Formatting a time is slow-ish (Intl) and the grid needs one per car per update, mostly the same few
// seconds: remember the last few seconds formatted.
const clockCache = new Map();
const CLOCK_CACHE_SIZE = 120;

export function fmtClock(msOrIso) {
  if (msOrIso == null) return "";
  const ms = typeof msOrIso === "number" ? msOrIso : Date.parse(msOrIso);
  if (Number.isNaN(ms)) return String(msOrIso);
  const second = Math.floor(ms / 1000);
  let text = clockCache.get(second);
  if (text === undefined) {
    text = CLOCK.format(ms);
    if (clockCache.size >= CLOCK_CACHE_SIZE) clockCache.delete(clockCache.keys().next().value);   // oldest first
    clockCache.set(second, text);
  }
  return text;
}

export function fmtDateTime(msOrIso) {
  if (msOrIso == null) return "";
  const date = new Date(msOrIso);
  return Number.isNaN(date.getTime()) ? String(msOrIso) : DATE_TIME.format(date);
}

/** 45 → "45 s", 600 → "10 min", 90 → "1.5 min", 5400 → "1.5 h". */
export function fmtDuration(seconds) {
  if (seconds == null) return "—";
  const s = Math.abs(seconds);
  const oneDecimal = (x) => String(Math.round(x * 10) / 10);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${oneDecimal(s / 60)} min`;
  return `${oneDecimal(s / 3600)} h`;
}

export function fmtLead(seconds) {
  if (seconds == null) return "—";
  return seconds >= 0 ? `${fmtDuration(seconds)} ahead` : `${fmtDuration(seconds)} late`;
}

/** Metrics mix ratios (0.83) and counts (12): three decimals for the first, none for the second. */
export function fmtMetric(v) {
  if (v == null) return "—";
  if (typeof v !== "number") return String(v);
  return Number.isInteger(v) ? String(v) : v.toFixed(3);
}

export const slug = (text) => String(text ?? "").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");

