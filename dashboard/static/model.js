// The model panel: the serving model's facts, the verdict at the operating point (both models at their thresholds
// on the held-out test cars, beside the targets; PR-AUC with its car-bootstrap interval), per failure mode and the
// threshold's transfer when the report has them, the figures over all windows, the plots. The verdict's sentences
// and every figure come from the server (dashboard/model.py), built from report.json's structured keys.

import { $, WALL, fmtDateTime, fmtMetric, fmtProb, make, rowFactory, setText, syncChildren } from "./format.js";

const makeMetricRow = rowFactory(["name", "num lstm", "num gbm"]);
let shownKey = null;   // the model version (and plots) on screen: a report never changes, so it renders once

const fixed = (v) => (v == null ? "n/a" : Number(v).toFixed(2));
const share = (v) => (v == null ? "n/a" : `${Math.round(100 * v)} %`);
const FIGURES = {
  warned_share: { show: (m) => `${m.warned ?? "?"} of ${m.episodes ?? "?"} (${share(m.warned_share)})`, target: share },
  median_lead_s: { show: (m) => (m.median_lead_s == null ? "n/a" : `${Math.round(m.median_lead_s)} s`), target: (v) => `${v} s` },
  false_alerts_per_healthy_car_hour: { show: (m) => fixed(m.false_alerts_per_healthy_car_hour), target: (v) => String(v) },
};

export function renderModelPanel(model, servedBy) {
  $("#model-none").hidden = model != null;
  $("#model-body").hidden = model == null;
  setText($("#model-version"), model?.version ?? "");
  setText($("#model-serving"), servedBy);
  if (model == null) {
    setText($("#model-facts"), "");
    return;
  }
  const key = `${model.version}\n${(model.plots ?? []).map((p) => p.url).join("\n")}`;
  if (key === shownKey) return;
  shownKey = key;
  const facts = [
    model.created_at ? `trained ${fmtDateTime(model.created_at)} (${WALL})` : null,
    model.threshold != null ? `threshold ${fmtProb(model.threshold)}` : null,
    model.horizon != null ? `horizon ${model.horizon} readings` : null,
    model.window != null ? `window ${model.window} readings` : null,
  ].filter(Boolean);
  setText($("#model-facts"), facts.join(" · "));

  const verdict = model.verdict ?? [];
  $("#model-verdict").replaceChildren(...verdict.map((line) => make("li", null, line)));
  $("#model-verdict").dataset.better = model.operating_point?.comparison?.better ?? "none";
  renderOperatingPoint(model.operating_point);

  const metrics = model.metrics ?? [];
  const rows = syncChildren($("#model-metrics"), metrics.length, makeMetricRow);
  metrics.forEach((metric, i) => {
    const [name, lstm, gbm] = rows[i].children;
    setText(name, metric.name);
    setText(lstm, fmtMetric(metric.lstm));
    setText(gbm, fmtMetric(metric.gbm));
  });
  $(".metrics-table").hidden = metrics.length === 0;
  $("#model-plots").replaceChildren(...(model.plots ?? []).map(makePlotThumbnail));
}

/** Rows: each figure at the operating point, a column per model and one for the target; per mode below. */
function renderOperatingPoint(point) {
  const table = $("#operating-point");
  table.hidden = point == null;
  if (point == null) return;
  const models = point.models;
  const head = make("tr");
  head.append(make("th", null, "operating point: held-out cars, each model at its threshold"),
    ...models.map((m) => make("th", "num", `${m.label}${m.serving ? " (serving)" : ""}`)), make("th", "num", "target"));
  const rows = [rowOf("threshold", models.map((m) => fmtMetric(m.threshold)), "")];
  const targets = new Map(point.targets.map((t) => [t.key, t]));
  for (const [key, figure] of Object.entries(FIGURES)) {
    const target = targets.get(key);
    const label = target?.label ?? key.replaceAll("_", " ");
    const row = rowOf(label, models.map((m) => figure.show(m)), target ? `${target.at_most ? "≤" : "≥"} ${figure.target(target.target)}` : "");
    row.dataset.figure = key;
    models.forEach((m, i) => {
      if (key in (m.met ?? {})) row.children[i + 1].dataset.met = String(m.met[key]);
    });
    rows.push(row);
  }
  // The threshold's transfer, where the report has it (models.<name>.threshold_transfer): its false-alarm rate on
  // the validation cars it was chosen on, beside the test cars' row above, and the test cars' rate minus the budget.
  if (models.some((m) => m.threshold_transfer)) {
    const transfer = (m) => m.threshold_transfer ?? {};
    const budget = models.map((m) => transfer(m).budget).find((b) => b != null);
    rows.push(rowOf("false alerts per healthy car-hour on the validation cars (where the threshold was chosen)",
      models.map((m) => withInterval(transfer(m).chosen_on)), budget == null ? "" : `budget ${budget}`));
    rows.push(rowOf("transfer error: test cars' rate − budget", models.map((m) => fixed(transfer(m).transfer_error)), ""));
  }
  // Per failure mode, where the report has it: {mode: {episodes, warned, warned_share}} or {mode: share}.
  const modes = [...new Set(models.flatMap((m) => Object.keys(m.by_mode ?? {})))];
  for (const mode of modes) {
    const cells = models.map((m) => {
      const v = m.by_mode?.[mode];
      if (v == null) return "—";
      return typeof v === "object" ? FIGURES.warned_share.show(v) : share(v);
    });
    const row = rowOf(`warned: ${mode.replaceAll("_", " ")}`, cells, "");
    row.dataset.mode = mode;
    rows.push(row);
  }
  table.replaceChildren(make("thead"), make("tbody"));
  table.tHead.append(head);
  table.tBodies[0].append(...rows);
}

/** A rate with its car-bootstrap interval: {rate, interval: [low, high]}. */
function withInterval(rate) {
  if (rate?.rate == null) return "n/a";
  const [low, high] = rate.interval ?? [];
  return low == null || high == null ? fixed(rate.rate) : `${fixed(rate.rate)} [${fixed(low)}, ${fixed(high)}]`;
}

function rowOf(label, cells, target) {
  const row = make("tr");
  row.append(make("td", "name", label), ...cells.map((c) => make("td", "num", c)), make("td", "num target", target));
  return row;
}

function makePlotThumbnail(plot) {
  const link = make("a", "plot");
  link.href = plot.url;
  link.target = "_blank";   // the full-size image, in a new tab
  link.rel = "noopener";
  link.title = `${plot.title} (opens full size)`;
  const img = make("img");
  img.src = plot.url;
  img.alt = plot.title;
  img.loading = "lazy";
  link.append(img, make("span", "plot-title", plot.title));
  return link;
}
