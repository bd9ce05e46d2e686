// One car's page: opened by a click on its fleet cell or its id in the alerts (the address becomes #car=<id>, so
// that the back button, a reload or a shared link show it again). Its data is GET /api/car/<id>, polled every
// POLL_MS while the page is open: the car's recent readings (every sensor, one chart per unit), its failure
// probability against the model's threshold, its alerts, failure onsets and the stretches in which it reported a
// failure, all on the cars' simulated time (event time).

import { $, SIM, fmtClock, fmtDateTime, fmtDuration, fmtLead, fmtProb, make, setData, setText } from "./format.js";

const POLL_MS = 2000;
const PROBABILITY_HEIGHT = 200;
const SENSOR_HEIGHT = 150;
const COLORS = ["#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d"];
const MARK = { alert: "#f59f00", onset: "#b42318", failure: "rgba(180, 35, 24, 0.12)" };
const X_LABEL = `simulated time (${SIM}, the cars' event time)`;

let open = null;   // {carId, timer, charts, fieldsKey}: the car on screen

export function carLink(carId) {
  return `#car=${encodeURIComponent(carId)}`;
}

function carFromHash() {
  const match = location.hash.match(/^#car=(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

/** Shows the car page or the fleet page, as the address says; call once at start. */
export function bindCarPage() {
  window.addEventListener("hashchange", route);
  $("#car-close").addEventListener("click", () => {
    location.hash = "";
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && open) location.hash = "";
  });
  route();
}

function route() {
  const carId = carFromHash();
  document.body.dataset.view = carId ? "car" : "fleet";
  $("#car-page").hidden = !carId;
  $("main.layout").hidden = Boolean(carId);
  if (carId && open?.carId === carId) return;
  close();
  if (!carId) return;
  open = { carId, timer: null, charts: null, fieldsKey: null };
  setText($("#car-title"), carId);
  setText($("#car-status"), "loading…");
  $("#car-body").hidden = true;
  window.scrollTo(0, 0);
  load(open);
}

function close() {
  if (!open) return;
  clearTimeout(open.timer);
  destroyCharts(open.charts);
  $("#car-sensors").replaceChildren();
  $("#car-probability").replaceChildren();
  window.dashboardCarCharts = null;
  open = null;
}

async function load(car) {
  try {
    const response = await fetch(`/api/car/${encodeURIComponent(car.carId)}`);
    if (car !== open) return;
    if (response.ok) {
      render(car, await response.json());
    } else {
      // 404: a car the dashboard has read nothing of (yet); the page keeps asking
      const body = await response.json().catch(() => ({}));
      setText($("#car-status"), body.detail ?? `HTTP ${response.status}`);
      setData($("#car-page"), "found", "false");
    }
  } catch (err) {
    if (car === open) setText($("#car-status"), `the dashboard does not answer: ${err}`);
  } finally {
    if (car === open) car.timer = setTimeout(() => load(car), POLL_MS);
  }
}

function render(car, data) {
  setData($("#car-page"), "found", "true");
  $("#car-body").hidden = false;
  setText($("#car-status"), "");
  renderFacts(data);
  const history = data.history;
  $("#car-no-history").hidden = history != null;
  if (history == null) {
    setText($("#car-no-history"), `no history kept for this car: the dashboard keeps ${data.kept.cars} cars' ` +
      `readings, as many as its budget of ${data.kept.total_points} points holds (DASHBOARD_CAR_HISTORY_POINTS)`);
  }
  const marks = carMarks(data);
  renderMarks(marks);
  if (history == null) return;
  const fields = Object.keys(history.readings.sensors);
  const key = fields.join(",");
  if (car.fieldsKey !== key) {
    destroyCharts(car.charts);
    car.charts = createCharts(fields, data.units ?? {});
    car.fieldsKey = key;
    window.dashboardCarCharts = car.charts;
  }
  const xr = history.readings.event_time.map((t) => t / 1000);
  const xp = history.predictions.event_time.map((t) => t / 1000);
  const threshold = data.threshold;
  for (const chart of car.charts.all) chart.marks = marks;
  car.charts.probability.setData([xp, history.predictions.probability, xp.map(() => threshold ?? null)]);
  for (const { chart, fields: group } of car.charts.sensors) {
    chart.setData([xr, ...group.map((f) => history.readings.sensors[f])]);
  }
}

function renderFacts(data) {
  const interval = data.interval_ms ? data.interval_ms / 1000 : null;
  const facts = [
    `state ${data.state ?? "unknown (no ground truth, no prediction yet)"}`,
    data.probability != null ? `failure probability ${fmtProb(data.probability)}` : null,
    data.alert_suppressed ? "alert suppressed: the car itself reported a failure" : null,
    data.threshold != null ? `threshold ${fmtProb(data.threshold)} (model ${data.model_version})` : null,
    data.horizon != null && interval ? `horizon ${data.horizon} readings = ${fmtDuration(data.horizon * interval)} ${SIM}` : null,
    data.event_time ? `latest prediction for the reading of ${fmtDateTime(data.event_time)} ${SIM}` : null,
    data.history ? `history: its last ${data.history.readings.event_time.length} readings (at most ${data.kept.points_per_car} a car)` : null,
  ].filter(Boolean);
  setText($("#car-facts"), facts.join(" · "));
  setData($("#car-page"), "state", data.state);
}

/** The alerts, onsets and failure stretches, in event time (ms), for the charts and the list. */
function carMarks(data) {
  return {
    alerts: (data.alerts ?? []).map((a) => ({ ...a, t: a.event_time })),
    onsets: (data.onsets ?? []).map((o) => ({ ...o, t: o.event_time })),
    failures: data.history?.failure_periods ?? [],
  };
}

function renderMarks(marks) {
  const items = [
    ...marks.alerts.map((a) => ({
      kind: "alert",
      t: a.t,
      text: `alert at ${fmtDateTime(a.t)} ${SIM}: probability ${fmtProb(a.probability)}, ` +
        `lead ${fmtLead(a.lead_s)} (${SIM}), ${a.outcome}`,
    })),
    ...marks.onsets.map((o) => ({ kind: "onset", t: o.t, text: `failure onset${o.failure_mode ? ` (${o.failure_mode.replaceAll("_", " ")})` : ""} at ${fmtDateTime(o.t)} ${SIM} (seq ${o.seq})` })),
    ...marks.failures.map((f) => ({
      kind: "failure",
      t: f.start,
      text: `reported a failure from ${fmtDateTime(f.start)} to ${f.end == null ? "its latest reading" : fmtDateTime(f.end)} ${SIM}`,
    })),
  ].sort((a, b) => b.t - a.t);
  const list = $("#car-marks");
  list.replaceChildren(...items.map((item) => {
    const li = make("li", `mark mark-${item.kind}`, item.text);
    li.dataset.kind = item.kind;
    return li;
  }));
  $("#car-marks-empty").hidden = items.length > 0;
}

function destroyCharts(charts) {
  charts?.resize.disconnect();
  for (const chart of charts?.all ?? []) chart.destroy();
}

// ---- charts -------------------------------------------------------------------------------------------

/** uPlot hook: the failure stretches shaded, onsets and alerts as vertical lines, under the series. */
function drawMarks(u) {
  const marks = u.marks;
  if (!marks) return;
  const { ctx } = u;
  const { top, height, left, width } = u.bbox;
  const x = (ms) => u.valToPos(ms / 1000, "x", true);
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.fillStyle = MARK.failure;
  for (const f of marks.failures) {
    const end = f.end ?? u.scales.x.max * 1000;
    ctx.fillRect(x(f.start), top, Math.max(x(end) - x(f.start), 2), height);
  }
  ctx.lineWidth = 2 * devicePixelRatio;
  for (const [kind, list] of [["onset", marks.onsets], ["alert", marks.alerts]]) {
    ctx.strokeStyle = MARK[kind];
    ctx.setLineDash(kind === "alert" ? [6 * devicePixelRatio, 4 * devicePixelRatio] : []);
    for (const m of list) {
      ctx.beginPath();
      ctx.moveTo(x(m.t), top);
      ctx.lineTo(x(m.t), top + height);
      ctx.stroke();
    }
  }
  ctx.restore();
}

function chartOptions(container, height, series, scale, xLabel = null) {
  return {
    width: Math.max(container.clientWidth, 300),
    height,
    cursor: { sync: { key: "car" }, drag: { x: true, y: false } },
    scales: { x: { time: true }, y: scale ?? {} },
    series: [{ label: SIM, value: (u, v) => (v == null ? "—" : `${fmtClock(v * 1000)} ${SIM}`) }, ...series],
    axes: [
      { label: xLabel, labelSize: xLabel ? 16 : 0, space: 80, values: (u, splits) => splits.map((v) => fmtClock(v * 1000)), grid: { stroke: "#e5e7eb" } },
      { size: 56, grid: { stroke: "#e5e7eb" } },
    ],
    hooks: { drawClear: [drawMarks] },
    legend: { live: true },
  };
}

function createCharts(fields, units) {
  const probabilityBox = $("#car-probability");
  const probability = new uPlot(
    chartOptions(probabilityBox, PROBABILITY_HEIGHT, [
      { label: "failure probability", stroke: "#9333ea", width: 1.5, value: (u, v) => fmtProb(v) },
      { label: "threshold", stroke: "#b42318", width: 1.5, dash: [6, 4], value: (u, v) => fmtProb(v) },
    ], { range: [0, 1] }, X_LABEL),
    [[], [], []],
    probabilityBox,
  );
  // One chart per unit, in the schema's order: a new field of a later schema gets its chart by itself.
  const groups = new Map();
  for (const field of fields) {
    const unit = units[field] ?? "";
    if (!groups.has(unit)) groups.set(unit, []);
    groups.get(unit).push(field);
  }
  const sensorsBox = $("#car-sensors");
  sensorsBox.replaceChildren();
  const sensors = [...groups].map(([unit, group]) => {
    const box = make("div", "car-chart");
    box.dataset.unit = unit;
    box.append(make("h3", null, unit ? `${group.map(label).join(", ")} (${unit})` : group.map(label).join(", ")));
    sensorsBox.append(box);
    const series = group.map((f, i) => ({ label: label(f), stroke: COLORS[i % COLORS.length], width: 1.25 }));
    const chart = new uPlot(chartOptions(box, SENSOR_HEIGHT, series), [[], ...group.map(() => [])], box);
    chart.root.dataset.fields = group.join(",");
    return { chart, fields: group };
  });
  const all = [probability, ...sensors.map((s) => s.chart)];
  const resize = new ResizeObserver(() => {
    for (const chart of all) {
      const width = Math.max(chart.root.parentElement?.clientWidth ?? 0, 300);
      if (width !== chart.width) chart.setSize({ width, height: chart.height });
    }
  });
  resize.observe($("#car-page"));
  return { probability, sensors, all, resize };
}

const label = (field) => field.replace(/_value$/, "").replaceAll("_", " ");
