// datagen jobs page: schedules, queue, running jobs with live progress, history, runs and batches
// with their costs (batch mode: estimated at submit, actual at ingest). Vanilla JS.
// Job arguments, run names and exit messages are untrusted text: the DOM is built with
// createElement/textContent only (never innerHTML), and the CSP forbids inline code.
"use strict";

const REFRESH_MS = 2000;

function act(label, path, done) {
  return el("button", { type: "button", on: { click: async () => {
    try { const r = await api(path, { method: "POST" }); toast(done(r)); refresh(); } catch (e) { toast(e.message, true); }
  } } }, label);
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");
const money = (x) => (x || 0).toFixed(4);

function progress(j) {
  const p = j.progress;
  if (!p || !p.target) return "";
  return el("span", {}, el("progress", { max: p.target, value: Math.min(p.accepted, p.target) }), ` ${p.accepted} / ${p.target}`);
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
  if (!rows.length) body.append(el("tr", {}, el("td", { class: "muted", colspan: 10 }, "none")));
}

function scheduleRow(s) {
  return el("tr", { "data-schedule": s.name },
    el("td", {}, s.name), el("td", {}, el("code", {}, s.cron)), el("td", {}, s.tz),
    el("td", {}, s.paused ? el("span", { class: "muted" }, "paused") : s.next_fire_local),
    el("td", {}, el("code", {}, [s.kind, ...s.args].join(" "))),
    el("td", {}, `${s.misfire} / ${s.overlap}`),
    el("td", {},
      act("run now", `/api/schedules/${s.id}/run-now`, (r) => `queued job ${r.job_id}`),
      s.paused ? act("resume", `/api/schedules/${s.id}/resume`, () => `resumed ${s.name}`)
               : act("pause", `/api/schedules/${s.id}/pause`, () => `paused ${s.name}`)));
}

const cancel = (j) => act("cancel", `/api/jobs/${j.id}/cancel`, () => `cancel sent to job ${j.id}`);

function runningRow(j) {
  const p = j.progress || {};
  return el("tr", { "data-job": j.id },
    el("td", {}, `#${j.id}`), el("td", {}, j.kind), el("td", {}, j.run || ""), el("td", {}, progress(j)),
    el("td", { class: "num" }, p.requests ?? ""), el("td", { class: "num" }, money(p.cost)), el("td", {}, j.worker || ""),
    el("td", {}, cancel(j)));
}

function queuedRow(j) {
  return el("tr", { "data-job": j.id },
    el("td", {}, `#${j.id}`), el("td", {}, j.kind), el("td", {}, j.queue), el("td", {}, j.schedule || ""),
    el("td", {}, time(j.scheduled_for)), el("td", {}, el("code", {}, j.args.join(" "))), el("td", {}, cancel(j)));
}

function historyRow(j) {
  const attempts = (j.attempts || []).map((a) => `${a.worker || "?"}: ${a.state}${a.message ? " (" + a.message + ")" : ""}`);
  return el("tr", { "data-job": j.id },
    el("td", {}, `#${j.id}`), el("td", {}, j.kind), el("td", {}, el("span", { class: `state ${j.state}` }, j.state)),
    el("td", {}, j.schedule || ""), el("td", {}, time(j.scheduled_for)), el("td", {}, j.run || ""), el("td", {}, progress(j)),
    el("td", { class: "num" }, money((j.progress || {}).cost)),
    el("td", { class: "msg" }, attempts.join("\n")), el("td", { class: "msg" }, j.message || ""));
}

function runRow(r) {
  // Batch runs: the estimate of all their batches, and the part whose batches are not ingested yet.
  const est = r.cost_est || r.cost_in_flight
    ? money(r.cost_est) + (r.cost_in_flight ? ` (${money(r.cost_in_flight)} in flight)` : "") : "";
  return el("tr", { "data-run": r.name },
    el("td", {}, r.name), el("td", {}, el("span", { class: `state ${r.state}` }, r.state)), el("td", {}, `${r.kept} / ${r.target}`),
    el("td", { class: "num" }, `${r.requests} (${r.errors} err)`), el("td", { class: "num" }, money(r.cost)), el("td", { class: "num" }, est));
}

function batchRow(b) {
  const why = (b.errors || []).map((e) => [e.code, e.message].filter(Boolean).join(": ")).join("\n");
  return el("tr", { "data-batch": b.id },
    el("td", {}, `#${b.id}`), el("td", {}, b.run), el("td", {}, b.stage), el("td", {}, el("code", {}, b.provider_id || "")),
    el("td", { class: "msg" }, el("span", { class: `state ${b.status}` }, b.status),
      b.status === "completed" && !b.ingested ? el("span", { class: "muted" }, " not ingested") : null,
      why ? el("div", { class: "muted" }, why) : null),
    el("td", { class: "num" }, `${b.completed} / ${b.failed} / ${b.requests}`), el("td", { class: "num" }, money(b.cost_est)),
    el("td", { class: "num" }, b.ingested ? money(b.cost) : ""), el("td", {}, time(b.created_at)));
}

async function refresh() {
  try {
    const [schedules, jobs, runs, batches] = await Promise.all(
      [api("/api/schedules"), api("/api/jobs?limit=200"), api("/api/runs"), api("/api/batches")]);
    fill("schedules", schedules.map(scheduleRow));
    fill("running", jobs.filter((j) => j.state === "running").map(runningRow));
    fill("queued", jobs.filter((j) => j.state === "queued").map(queuedRow));
    fill("history", jobs.filter((j) => !["running", "queued"].includes(j.state)).map(historyRow));
    fill("runs", runs.map(runRow));
    fill("batches", batches.map(batchRow));
    $("#auth-state").textContent = token() ? "token set" : "read-only";
  } catch (e) {
    toast(e.message, true);
  }
}

$("#save-token").addEventListener("click", () => {
  const v = $("#token").value.trim();
  if (v) sessionStorage.setItem("datagen.token", v); else sessionStorage.removeItem("datagen.token");
  $("#token").value = "";
  refresh();
});

refresh();
setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
