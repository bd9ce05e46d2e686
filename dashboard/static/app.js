// car-stream-ml fleet dashboard.
//
// The backend pushes one snapshot per second over Server-Sent Events (event "update", data = the JSON
// object GET /api/snapshot returns). Each snapshot is rendered whole: the page keeps no state of its own
// besides the grid query (state filter, search, page) the stream is opened with.
//
// A click on a fleet cell or on a car id in the alerts opens that car's page (car.js).
//
// Rendering runs every second with up to 500 grid cells, so every panel reuses its DOM nodes and only
// writes what changed: no innerHTML of big strings, no layout reads in the loops.

const SEARCH_DEBOUNCE_MS = 300;
const STALE_AFTER_MS = 5000;     // no update for this long: the header says the data is stale
const RETRY_MS = 3000;           // reopen delay when the browser gave up on the stream (it retries by itself otherwise)
const DLQ_LATEST_SHOWN = 8;
const DETAIL_MAX_CHARS = 300;    // a dead letter's detail may be a whole payload: cut it before it reaches the DOM
const CHART_HEIGHT = 250;
const DEFAULT_THRESHOLD = 0.5;   // warned-cell shading when no model is known yet
const STATE_FILTERS = ["all", "healthy", "warned", "ood", "failed"];

// The rate series of the chart, in the order of uPlot's data arrays (after x = history.t); lag comes last.
const RATE_SERIES = [
  { key: "mqtt_in", label: "MQTT in", stroke: "#2563eb" },
  { key: "car_sensor", label: "car-sensor", stroke: "#16a34a" },
  { key: "predictions", label: "predictions", stroke: "#9333ea" },
];
const LAG_SERIES = { key: "lag", label: "lag", stroke: "#ea580c" };

import { bindCarPage, carLink } from "./car.js";
import { renderModelPanel } from "./model.js";
import { renderRegistryPanel } from "./registry.js";
import {
  $, SIM, WALL, fmtClock, fmtDateTime, fmtDuration, fmtLead, fmtProb, make, plainInt, plainRate,
  rowFactory, setData, setText, slug, syncChildren,
} from "./format.js";

// ---- state --------------------------------------------------------------------------------------------

const query = readQueryFromLocation();   // what the grid shows: {state, q, page}
let source = null;                       // the open EventSource
let retryTimer = null;
let lastUpdateAt = 0;                    // performance.now() of the last update received
let updates = 0;
let chart = null;

// Render timings, read by the benchmark: ms from the start of render() to the end of the chart's commit.
// panelMs: the last render's time per panel (the chart's excludes its deferred commit).
const renderStats = { count: 0, lastMs: 0, maxMs: 0, totalMs: 0, panelMs: {} };
window.dashboardRenderStats = renderStats;

// ---- the query and the stream -------------------------------------------------------------------------

function readQueryFromLocation() {
  // The query lives in the address bar too, so a reload or a shared link shows the same grid.
  const params = new URLSearchParams(location.search);
  const state = params.get("state");
  const page = Number.parseInt(params.get("page") ?? "0", 10);
  return {
    state: STATE_FILTERS.includes(state) ? state : "all",
    q: params.get("q") ?? "",
    page: Number.isFinite(page) && page > 0 ? page : 0,
  };
}

function queryString() {
  return new URLSearchParams({ state: query.state, q: query.q, page: String(query.page) }).toString();
}

function connect() {
  clearTimeout(retryTimer);
  if (source) source.close();   // a closed EventSource fires nothing more: no stale update can land
  history.replaceState(null, "", `?${queryString()}`);
  setConnection("connecting");
  const es = new EventSource(`/events?${queryString()}`);
  source = es;
  es.onopen = () => setConnection("live");
  es.onerror = () => {
    if (es !== source) return;
    if (es.readyState === EventSource.CLOSED) {
      // The browser gives up on a non-200 answer or a wrong content type; keep trying ourselves.
      setConnection("closed");
      retryTimer = setTimeout(connect, RETRY_MS);
    } else {
      setConnection("reconnecting");   // CONNECTING: the browser retries by itself
    }
  };
  es.addEventListener("update", (event) => {
    if (es !== source) return;
    let snapshot;
    try {
      snapshot = JSON.parse(event.data);
    } catch (err) {
      console.error("update is not JSON", err);
      return;
    }
    setConnection("live");
    render(snapshot);
  });
}

/** Changes the grid query and reopens the stream with it. */
function changeQuery(changes) {
  const next = { ...query, ...changes };
  if (next.state === query.state && next.q === query.q && next.page === query.page) return;
  Object.assign(query, next);
  syncControls();
  connect();
}

function setConnection(status) {
  const node = $("#connection");
  setText(node, status);
  setData(node, "status", status);
}

// ---- render -------------------------------------------------------------------------------------------

// Each panel renders on its own: a field one panel cannot handle must not blank the others.
const PANELS = [
  ["header", renderHeader],
  ["fleet", renderFleet],
  ["grid", renderGrid],
  ["alerts", renderAlerts],
  ["stages", renderStages],
  ["chart", renderChart],
  ["dlq", renderDlq],
  ["model", (snap) => renderModelPanel(snap.model, servedBy(snap))],
  ["registry", (snap) => renderRegistryPanel(snap.registry)],
  ["services", renderServices],
];

function render(snapshot) {
  const start = performance.now();
  lastUpdateAt = start;   // before the header renders its age
  for (const [name, renderPanel] of PANELS) {
    const panelStart = performance.now();
    try {
      renderPanel(snapshot);
    } catch (err) {
      console.error(`rendering ${name} failed`, err);
    }
    renderStats.panelMs[name] = performance.now() - panelStart;
  }
  updates += 1;
  document.body.dataset.updates = String(updates);
  // uPlot commits setData in a microtask queued above; this one runs after it, so the time includes the chart.
  queueMicrotask(() => recordRenderTime(performance.now() - start));
}

function recordRenderTime(ms) {
  renderStats.count += 1;
  renderStats.lastMs = ms;
  renderStats.totalMs += ms;
  renderStats.maxMs = Math.max(renderStats.maxMs, ms);
}

function renderHeader(snap) {
  setText($("#last-update"), fmtClock(snap.generated_at));
  setText($("#header-model-version"), snap.model?.version ?? "none");
  setText($("#header-serving"), servedBy(snap));
  refreshAge();
}

/** Runs every second too, so a silent stream shows up as stale even with no update to render. */
function refreshAge() {
  if (!lastUpdateAt && !updates) return;
  const ageMs = performance.now() - lastUpdateAt;
  const age = $("#update-age");
  setText(age, ageMs >= STALE_AFTER_MS ? `(${Math.round(ageMs / 1000)} s ago — stale)` : "");
  setData(document.body, "stale", ageMs >= STALE_AFTER_MS ? "true" : "false");
}

function renderFleet(snap) {
  const fleet = snap.fleet ?? {};
  setText($("#fleet-cars"), plainInt(fleet.cars ?? 0));
  for (const state of ["healthy", "warned", "ood", "failed"]) {
    const count = fleet[state] ?? 0;
    setText($(`#fleet-${state}`), plainInt(count));
    const share = fleet.cars ? (100 * count) / fleet.cars : 0;
    setText($(`#share-${state}`), `${share < 10 && share > 0 ? share.toFixed(1) : Math.round(share)} %`);
  }
}

// ---- fleet grid ---------------------------------------------------------------------------------------

function renderGrid(snap) {
  const grid = snap.grid ?? { cars: [], page: 0, pages: 0, matching: 0 };
  const cars = grid.cars ?? [];
  const threshold = snap.model?.threshold ?? DEFAULT_THRESHOLD;
  const cells = syncChildren($("#fleet-grid"), cars.length, makeCell);
  for (let i = 0; i < cars.length; i += 1) updateCell(cells[i], cars[i], threshold);
  $("#grid-empty").hidden = cars.length > 0;

  // The backend may clamp a page past the end (the search narrowed the fleet): follow what it shows,
  // without reopening the stream, so previous/next step from the page on screen.
  if (Number.isInteger(grid.page) && grid.page !== query.page && grid.state === query.state && grid.query === query.q) {
    query.page = grid.page;
    history.replaceState(null, "", `?${queryString()}`);
  }
  const pages = Math.max(grid.pages ?? 0, 1);
  setText($("#page-info"), `page ${(grid.page ?? 0) + 1} of ${pages}, ${grid.matching ?? 0} matching`);
  $("#page-prev").disabled = query.page <= 0;
  $("#page-next").disabled = query.page >= pages - 1;
}

function makeCell() {
  const cell = make("div", "car-cell");
  cell.setAttribute("role", "listitem");
  cell.tabIndex = 0;   // Enter opens the car's page, like a click
  cell._view = {};   // what this node shows now, to skip writes that change nothing
  return cell;
}

function updateCell(cell, car, threshold) {
  const shown = cell._view;
  if (shown.carId !== car.car_id) {
    cell.dataset.carId = car.car_id;
    shown.carId = car.car_id;
  }
  if (shown.state !== car.state) {
    cell.dataset.state = car.state;
    shown.state = car.state;
  }
  const warned = car.state === "warned" && car.probability != null;
  // A warned cell shows its probability in percent on an amber (at the threshold) to red (certain) shade.
  const label = warned ? String(Math.round(car.probability * 100)) : "";
  if (shown.label !== label) {
    cell.textContent = label;
    shown.label = label;
  }
  const hue = warned ? warnHue(car.probability, threshold) : null;
  if (shown.hue !== hue) {
    cell.style.backgroundColor = hue == null ? "" : `hsl(${hue} 92% 50%)`;
    cell.classList.toggle("hot", hue != null && hue < 22);   // white text on the red end
    shown.hue = hue;
  }
  const title = cellTitle(car);
  if (shown.title !== title) {
    cell.title = title;
    shown.title = title;
  }
}

/** 45 (amber) at the threshold down to 0 (red) at probability 1, in whole degrees so it rarely changes. */
function warnHue(probability, threshold) {
  const span = Math.max(1 - threshold, 1e-6);
  const t = Math.min(Math.max((probability - threshold) / span, 0), 1);
  return Math.round(45 * (1 - t));
}

function cellTitle(car) {
  const lines = [`${car.car_id} — ${car.state} (click: its page)`];
  if (car.probability != null) lines.push(`failure probability ${fmtProb(car.probability)}`);
  if (car.seq != null) lines.push(`seq ${car.seq}${car.event_time ? ` at ${fmtClock(car.event_time)} ${SIM}` : ""}`);
  if (car.ood_features?.length) lines.push(`out of distribution: ${car.ood_features.join(", ")}`);
  if (car.alert_suppressed) lines.push("alert suppressed: the car itself reported a failure");
  return lines.join("\n");
}

// ---- alerts -------------------------------------------------------------------------------------------

const makeAlertRow = rowFactory(["time", "car mono", "num prob", "within", "lead", "outcome"]);

function renderAlerts(snap) {
  const alerts = snap.alerts ?? [];
  const rows = syncChildren($("#alerts tbody"), alerts.length, makeAlertRow);
  alerts.forEach((alert, i) => {
    const row = rows[i];
    setData(row, "carId", alert.car_id);
    setData(row, "seq", alert.seq);
    setData(row, "leadS", alert.lead_s);
    setData(row, "outcome", slug(alert.outcome));
    const [time, car, prob, within, lead, outcome] = row.children;
    setText(time, fmtClock(alert.event_time));
    time.title = `${fmtDateTime(alert.event_time)}, simulated time (the reading's event time)`;
    setCarLink(car, alert.car_id);
    setText(prob, fmtProb(alert.probability));
    prob.title = alert.threshold == null ? "" : `threshold ${fmtProb(alert.threshold)}, model ${alert.model_version ?? "?"}`;
    setText(within, fmtDuration(alert.expected_within_s));
    within.title = `the horizon: ${alert.expected_within_s} s of simulated time`;
    setText(lead, fmtLead(alert.lead_s));
    lead.title = alert.lead_s == null ? "" : "from the alert to the failure's onset, in simulated time";
    setText(outcome, alert.outcome);
  });
  $("#alerts-empty").hidden = alerts.length > 0;
}

/** A link to the car's page in `cell`, made once and then only relabelled. */
function setCarLink(cell, carId) {
  let link = cell.firstElementChild;
  if (!link) {
    link = make("a", "car-link");
    cell.replaceChildren(link);
  }
  setText(link, carId);
  const href = carLink(carId);
  if (link.getAttribute("href") !== href) link.setAttribute("href", href);
}

// ---- stages, lag and the chart ------------------------------------------------------------------------

const makeStageRow = rowFactory(["label", "num stage-total", "num stage-rate"]);

function renderStages(snap) {
  const stages = snap.stages ?? [];
  const rows = syncChildren($("#stages-rows"), stages.length, makeStageRow);
  stages.forEach((stage, i) => {
    const row = rows[i];
    setData(row, "stage", stage.name);
    const [label, total, rate] = row.children;
    setText(label, stage.label ?? stage.name);
    setText(total, plainInt(stage.total));
    setText(rate, plainRate(stage.rate));
    // Unknown (null) means the service's metrics could not be read: say so on hover.
    row.title = stage.total == null && stage.rate == null ? "metrics not reachable" : "";
  });
  setText($("#lag"), plainInt(snap.lag));
}

function createChart() {
  const container = $("#chart");
  // Both y scales start at 0; all-null data (a service down) still gets a sane 0..1 range.
  const fromZero = (u, min, max) => [0, max == null || !Number.isFinite(max) || max <= 0 ? 1 : max * 1.1];
  const rateValue = (u, v) => (v == null ? "—" : v.toFixed(1));
  const opts = {
    width: Math.max(container.clientWidth, 200),
    height: CHART_HEIGHT,
    scales: { x: { time: true }, rate: { range: fromZero }, lag: { range: fromZero } },
    series: [
      { label: WALL, value: (u, v) => (v == null ? "—" : fmtClock(v * 1000)) },
      ...RATE_SERIES.map((s) => ({ label: s.label, scale: "rate", stroke: s.stroke, width: 1.5, value: rateValue })),
      { label: `${LAG_SERIES.label} (records)`, scale: "lag", stroke: LAG_SERIES.stroke, width: 1.5, dash: [5, 4],
        value: (u, v) => (v == null ? "—" : String(Math.round(v))) },
    ],
    axes: [
      // Local 24 h clock times: uPlot's default puts a 12 h date line under the axis, noise for a 5 min window.
      // Whole seconds at least: with a few points uPlot would otherwise tick every 0.5 s and repeat labels.
      { label: `${WALL} (the dashboard's samples)`, labelSize: 16, space: 70, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600], values: (u, splits) => splits.map((v) => fmtClock(v * 1000)), grid: { stroke: "#e5e7eb" }, ticks: { stroke: "#e5e7eb" } },
      { scale: "rate", label: "readings/s", size: 50, labelSize: 18, grid: { stroke: "#e5e7eb" }, ticks: { stroke: "#e5e7eb" } },
      { scale: "lag", side: 1, label: "lag (records)", size: 50, labelSize: 18, grid: { show: false }, ticks: { stroke: "#e5e7eb" } },
    ],
    cursor: { drag: { x: false, y: false } },   // the data moves every second: zooming would be undone anyway
    legend: { live: true },
  };
  chart = new uPlot(opts, emptyChartData(), container);
  window.dashboardChart = chart;
  // Size to the container: the panel's width follows the window and the layout.
  new ResizeObserver(() => {
    const width = Math.max(container.clientWidth, 200);
    if (width !== chart.width) chart.setSize({ width, height: CHART_HEIGHT });
  }).observe(container);
}

function emptyChartData() {
  return [[], ...RATE_SERIES.map(() => []), []];
}

function renderChart(snap) {
  const history = snap.history ?? {};
  const t = history.t ?? [];
  // uPlot wants equally long arrays: a missing series becomes nulls (a gap).
  const series = (key) => (Array.isArray(history[key]) && history[key].length === t.length ? history[key] : t.map(() => null));
  chart.setData([t, ...RATE_SERIES.map((s) => series(s.key)), series(LAG_SERIES.key)]);
}

// ---- dead letters -------------------------------------------------------------------------------------

const makeReasonRow = rowFactory(["reason", "num dlq-count"]);
const makeLatestRow = rowFactory(["time", "reason", "car mono", "service", "detail"]);

function renderDlq(snap) {
  const dlq = snap.dlq ?? { total: 0, by_reason: [], latest: [] };
  setText($("#dlq-total"), plainInt(dlq.total ?? 0));

  const reasons = dlq.by_reason ?? [];
  const reasonRows = syncChildren($("#dlq .dlq-reasons tbody"), reasons.length, makeReasonRow);
  reasons.forEach((entry, i) => {
    setData(reasonRows[i], "reason", entry.reason);
    setText(reasonRows[i].children[0], entry.reason);
    setText(reasonRows[i].children[1], plainInt(entry.count));
  });

  const latest = (dlq.latest ?? []).slice(0, DLQ_LATEST_SHOWN);
  const latestRows = syncChildren($("#dlq-latest-rows"), latest.length, makeLatestRow);
  latest.forEach((record, i) => {
    const [time, reason, car, service, detail] = latestRows[i].children;
    setText(time, fmtClock(record.received_at));
    time.title = `${fmtDateTime(record.received_at)}, ${WALL} (when the service dead-lettered it)`;
    setText(reason, record.reason);
    setText(car, record.car_id ?? "—");
    setText(service, record.service ?? "");
    const text = String(record.detail ?? "").slice(0, DETAIL_MAX_CHARS);
    setText(detail, text);   // CSS cuts it to the column with an ellipsis; the tooltip shows the rest
    detail.title = text;
  });

  $("#dlq .dlq-reasons").hidden = reasons.length === 0;
  $("#dlq .dlq-latest").hidden = latest.length === 0;
  $("#dlq-empty").hidden = reasons.length > 0 || latest.length > 0;
}

// ---- model --------------------------------------------------------------------------------------------

/** "served by java" or "served by python": the program the predictors' metrics name (predictor_serving_info). */
function servedBy(snap) {
  return snap.serving ? `served by ${snap.serving}` : "";
}

// ---- services -----------------------------------------------------------------------------------------

function makeServiceItem() {
  const item = make("li", "service");
  item.append(make("span", "dot"), make("span", "service-name"), make("span", "service-status"), make("span", "service-url mono"));
  return item;
}

function renderServices(snap) {
  const services = snap.services ?? [];
  const items = syncChildren($("#service-list"), services.length, makeServiceItem);
  services.forEach((service, i) => {
    const item = items[i];
    setData(item, "service", service.name);
    setData(item, "up", service.up ? "true" : "false");
    const [, name, status, url] = item.children;
    setText(name, service.name);
    setText(status, service.up ? "up" : `down${service.error ? `: ${service.error}` : ""}`);
    status.title = service.error ?? "";
    setText(url, service.url);
  });
  $("#services-empty").hidden = services.length > 0;
}

// ---- controls -----------------------------------------------------------------------------------------

/** Puts the query into the controls (at start, and when a tile click changes the state filter). */
function syncControls() {
  $("#filter-state").value = query.state;
  const search = $("#filter-search");
  if (search.value.trim() !== query.q) search.value = query.q;   // leave a half-typed value alone
  for (const tile of document.querySelectorAll(".tile")) {
    tile.classList.toggle("active", tile.dataset.filter === query.state);
  }
}

function bindControls() {
  $("#filter-state").addEventListener("change", (e) => changeQuery({ state: e.target.value, page: 0 }));

  for (const tile of document.querySelectorAll(".tile")) {
    tile.addEventListener("click", () => changeQuery({ state: tile.dataset.filter, page: 0 }));
  }

  // Debounced: one new stream when the typing stops, not one per key. Enter searches at once.
  const search = $("#filter-search");
  let debounce = null;
  const applySearch = () => {
    clearTimeout(debounce);
    changeQuery({ q: search.value.trim(), page: 0 });
  };
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(applySearch, SEARCH_DEBOUNCE_MS);
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") applySearch();
  });

  // A cell opens its car's page; cells are reused nodes, so one listener on the grid serves them all.
  const openCell = (e) => {
    const cell = e.target.closest(".car-cell");
    if (cell?.dataset.carId) location.hash = carLink(cell.dataset.carId);
  };
  $("#fleet-grid").addEventListener("click", openCell);
  $("#fleet-grid").addEventListener("keydown", (e) => {
    if (e.key === "Enter") openCell(e);
  });

  $("#page-prev").addEventListener("click", () => changeQuery({ page: Math.max(query.page - 1, 0) }));
  $("#page-next").addEventListener("click", () => changeQuery({ page: query.page + 1 }));
}

// ---- start --------------------------------------------------------------------------------------------

function start() {
  createChart();
  syncControls();
  bindControls();
  setInterval(refreshAge, 1000);
  bindCarPage();
  connect();
}

start();
