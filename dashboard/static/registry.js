// The champion/challenger panel: the model registry's two versions side by side, each with its offline figures
// (its report, held-out test cars, at its operating point) and its live figures (the judge's latest round, while
// it judged this pair), the gate's verdict and reason, the decisions newest first. The server reads the files
// (dashboard/registry_panel.py); this only lays them out, and only when they changed.

import { $, WALL, fmtDateTime, fmtProb, make } from "./format.js";

const ROLES = [
  ["champion", "champion", "serving", "none: the newest version is served"],
  ["challenger", "challenger", "scored in the shadow", "none pending"],
];
const fixed = (v, digits) => (v == null ? "n/a" : Number(v).toFixed(digits));
const seconds = (v) => (v == null ? "n/a" : `${Math.round(v)} s`);
const warned = (f) => (f.episodes == null ? "n/a" : `${f.warned} of ${f.episodes}`);
// Each figure offline (report.json at the operating point) and live (the judge's LiveFigures); null: not shown.
const FIGURES = [
  ["warned", "failure episodes warned", warned, warned],
  ["median_lead", "median lead (simulated s)", (o) => seconds(o.median_lead_s), (l) => seconds(l.median_lead_s)],
  ["false_alerts", "false alerts per healthy car-hour",
    (o) => fixed(o.false_alerts_per_healthy_car_hour, 2), (l) => fixed(l.false_alerts_per_car_hour, 2)],
  ["pr_auc", "PR-AUC", (o) => fixed(o.pr_auc, 3), (l) => fixed(l.pr_auc, 3)],
  ["matured_readings", "matured readings judged", null, (l) => String(l.matured_readings)],
];
const FACTS = [
  ["trained", `trained (${WALL})`, (s) => fmtDateTime(s.created_at)],
  ["threshold", "threshold", (s) => fmtProb(s.threshold)],
  ["horizon", "horizon · window (readings)", (s) => `${s.horizon ?? "?"} · ${s.window ?? "?"}`],
];
let shownKey = null;

export function renderRegistryPanel(registry) {
  const key = JSON.stringify(registry ?? null);
  if (key === shownKey) return;
  shownKey = key;
  const panel = $("#registry");
  panel.dataset.state = registry == null ? "unknown" : registry.in_use ? "in-use" : "absent";
  $("#registry-none").hidden = registry?.in_use !== false;
  $("#registry-none").textContent = registry?.note ?? "";
  $("#registry-body").hidden = !registry?.in_use;
  const problems = registry?.problems ?? [];
  $("#registry-problems").hidden = problems.length === 0;
  $("#registry-problems").replaceChildren(...problems.map((p) => make("li", null, p)));
  if (!registry?.in_use) return;
  renderVersions(registry);
  renderJudgement(registry.judgement);
  renderHistory(registry.history ?? []);
}

/** A column pair per role (offline, live), a row per fact and per figure. */
function renderVersions(registry) {
  const judgement = registry.judgement;
  const head = make("tr");
  const sub = make("tr");
  head.append(make("th"));
  sub.append(make("th"));
  for (const [role, label, does, none] of ROLES) {
    const side = registry[role];
    const th = make("th", "side", side ? `${label} ${side.version} (${does})` : `${label}: ${none}`);
    th.colSpan = 2;
    th.dataset.role = role;
    head.append(th);
    const live = side?.live
      ? `live (judged ${fmtDateTime(judgement.time)}, ${WALL})`
      : judgement == null ? "no live judgement yet" : "no live judgement of this pair yet";
    sub.append(cell("th", role, "offline", "offline (report, held-out cars)"), cell("th", role, "live", live));
  }
  const rows = [];
  for (const [name, label, show] of FACTS) {
    const row = labelled(name, label);
    for (const [role] of ROLES) {
      const td = cell("td", role, "fact", (registry[role] && show(registry[role])) || "—");
      td.colSpan = 2;
      row.append(td);
    }
    rows.push(row);
  }
  for (const [name, label, offline, live] of FIGURES) {
    const row = labelled(name, label);
    for (const [role] of ROLES) {
      const side = registry[role];
      const shown = (show, figures, missing) => (side == null ? "—" : show == null ? "" : figures ? show(figures) : missing);
      row.append(
        cell("td", role, "offline", shown(offline, side?.offline, "no report")),
        cell("td", role, "live", shown(live, side?.live, "—")),
      );
    }
    rows.push(row);
  }
  const table = $("#registry-versions");
  table.replaceChildren(make("thead"), make("tbody"));
  table.tHead.append(head, sub);
  table.tBodies[0].append(...rows);
}

function renderJudgement(judgement) {
  const node = $("#registry-judgement");
  node.dataset.verdict = judgement?.verdict ?? "none";
  node.dataset.current = String(judgement?.current ?? false);
  node.dataset.time = judgement?.time ?? "";
  if (judgement == null) {
    node.replaceChildren(make("p", "empty", "no live judgement yet: python -m ml judge writes one after each round that judges"));
    return;
  }
  const rule = judgement.rule ?? {};
  const facts = [
    `judged ${fmtDateTime(judgement.time)} (${WALL})`,
    `champion ${judgement.champion} against challenger ${judgement.challenger}`,
    judgement.horizon != null ? `H ${judgement.horizon}, W ${judgement.window} readings` : null,
    rule.min_episodes != null
      ? `gate: at least ${rule.min_episodes} episodes, PR-AUC margin ${rule.pr_auc_margin}, false-alert margin ${rule.false_alert_margin}`
      : null,
  ].filter(Boolean);
  const head = make("p", "judgement-head");
  head.append(make("b", "verdict-word", judgement.verdict), ` · ${facts.join(" · ")}`);
  const parts = [head, make("p", "judgement-reason", judgement.reason)];
  if (!judgement.current) parts.push(make("p", "empty", "an earlier pair: the registry has decided since"));
  node.replaceChildren(...parts);
}

function renderHistory(history) {
  const rows = history.map((d) => {
    const row = make("tr");
    row.dataset.action = d.action;
    row.dataset.version = d.version;
    row.append(make("td", "time", fmtDateTime(d.time)), make("td", "action", d.action),
      make("td", "mono", d.version), make("td", "reason", d.reason));
    return row;
  });
  $("#registry-history").replaceChildren(...rows);
  $("#registry-history-empty").hidden = history.length > 0;
}

function labelled(name, label) {
  const row = make("tr");
  row.dataset.figure = name;
  row.append(make("td", "name", label));
  return row;
}

function cell(tag, role, kind, text) {
  const node = make(tag, kind === "fact" ? null : "num", text);
  node.dataset.role = role;
  node.dataset.kind = kind;
  return node;
}
