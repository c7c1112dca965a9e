/**
 * The web dashboard: ONE hand-written HTML page (inline CSS and JS, no framework, no build step), served at
 * `GET /` to browsers by the same app on Node and Workers. It reads the JSON API with the token the user
 * pastes once (kept in localStorage) and polls: the cluster every 3 s, a job's output every second.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Conductor</title>
<style>
:root{--fg:#1b1f24;--mute:#5b6570;--bg:#f6f7f9;--card:#fff;--line:#dde1e6;--acc:#2457c5;--ok:#1a7f37;--warn:#9a6700;--bad:#c62828}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;padding:.75rem 1rem;background:#10243e;color:#fff}
header h1{font-size:1.15rem;margin:0;flex:1}
header span{font-size:.85rem;opacity:.85}
main{max-width:1100px;margin:0 auto;padding:1rem}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem;margin-bottom:1rem}
h2{font-size:1.05rem;margin:0 0 .75rem}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:.75rem}
.stat{border:1px solid var(--line);border-radius:6px;padding:.5rem .75rem}
.stat b{display:block;font-size:1.5rem}
.stat small{color:var(--mute)}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:.5rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--mute);font-weight:600}
button,select,input{font:inherit;padding:.35rem .7rem;border:1px solid #9aa4ae;border-radius:5px;background:#fff;color:var(--fg)}
button{cursor:pointer}
button.primary{background:var(--acc);border-color:var(--acc);color:#fff}
button.danger{border-color:var(--bad);color:var(--bad)}
button[aria-pressed=true]{background:#10243e;color:#fff}
a{color:var(--acc)}
:focus-visible{outline:3px solid #f0a000;outline-offset:2px}
.state{font-weight:600;font-size:.8rem;padding:.1rem .4rem;border-radius:4px;background:#eef1f4}
.s-RUNNING,.s-ready{color:var(--acc)}.s-COMPLETED{color:var(--ok)}.s-PENDING,.s-draining{color:var(--warn)}
.s-FAILED,.s-TIMEOUT,.s-NODE_FAIL,.s-CANCELLED,.s-down{color:var(--bad)}
.empty{border:2px dashed var(--line);border-radius:8px;padding:1rem;color:var(--mute)}
pre{background:#0f1720;color:#e6edf3;padding:.75rem;border-radius:6px;overflow:auto;max-height:24rem;white-space:pre-wrap;word-break:break-word;font-size:.85rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dt{color:var(--mute)}dd{margin:0;word-break:break-word}
svg{width:100%;height:auto;display:block}
.err{color:var(--bad)}
[hidden]{display:none!important}
@media (max-width:600px){main{padding:.5rem}section{padding:.75rem}th,td{padding:.35rem}.hide-s{display:none}}
</style>
</head>
<body>
<header><h1>Conductor</h1><span id="updated" aria-live="polite"></span><button id="token-btn" type="button">Token</button></header>
<main>
<section id="token-box" hidden aria-labelledby="token-h">
<h2 id="token-h">API token needed</h2>
<p>This control plane requires a token. Paste one (kept in this browser only):</p>
<form id="token-form" class="row"><label for="token-input">Token</label>
<input id="token-input" type="password" autocomplete="off" size="40" placeholder="cnd_...">
<button class="primary" type="submit">Save</button><button id="token-clear" type="button">Forget</button></form>
</section>
<p id="error" class="err" role="alert"></p>
<div id="overview">
<section aria-labelledby="cap-h"><h2 id="cap-h">Cluster capacity</h2>
<div class="stats">
<div class="stat"><small>Total CPUs</small><b id="total">–</b></div>
<div class="stat"><small>Allocated</small><b id="allocated">–</b></div>
<div class="stat"><small>Available</small><b id="available">–</b></div>
<div class="stat"><small>Utilization</small><b id="utilization">–</b></div>
</div>
<div class="row" role="group" aria-label="Chart window"><span>Utilization over the last</span>
<button type="button" data-window="1h" aria-pressed="true">hour</button><button type="button" data-window="24h" aria-pressed="false">24 h</button></div>
<div id="chart"></div>
</section>
<section aria-labelledby="w-h"><h2 id="w-h">Workers</h2><div id="workers"></div></section>
<section aria-labelledby="j-h"><h2 id="j-h">Jobs</h2>
<form id="filters" class="row" role="search"><label for="state">State</label>
<select id="state"><option value="">all</option><option>PENDING</option><option>RUNNING</option><option>COMPLETED</option><option>FAILED</option><option>CANCELLED</option><option>TIMEOUT</option><option>NODE_FAIL</option></select>
<label for="q">Search</label><input id="q" type="search" placeholder="name or account"></form>
<div id="jobs" class="scroll"></div></section>
</div>
<section id="detail" hidden aria-labelledby="d-h">
<div class="row"><a href="#">&larr; All jobs</a></div>
<h2 id="d-h"></h2>
<div class="row"><button id="cancel" class="danger" type="button" hidden>Cancel job</button></div>
<dl id="fields"></dl>
<h3>Script</h3><pre id="script"></pre>
<h3>Output</h3><pre id="stdout" aria-live="polite"></pre>
<h3>Errors (stderr)</h3><pre id="stderr"></pre>
</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const FINAL = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"];
let chartWindow = "1h", isAdmin = false, detailId = null, detailTimer = 0;
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.onclick = v; else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k === null || k === undefined ? "" : k);
  return e;
}
function token() { return localStorage.getItem("conductor-token") || ""; }
async function api(path, init) {
  const headers = { accept: "application/json" };
  if (token()) headers.authorization = "Bearer " + token();
  if (init && init.body) headers["content-type"] = "application/json";
  const res = await fetch(path, Object.assign({}, init, { headers }));
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) { $("token-box").hidden = false; throw new Error("A token is needed (see above)"); }
  if (!res.ok) { const e = new Error((body.error && body.error.message) || res.statusText); e.status = res.status; throw e; }
  return body;
}
function age(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}
function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
function badge(s) { return h("span", { class: "state s-" + s }, s); }
function table(head, rows) {
  return h("table", {}, h("thead", {}, h("tr", {}, ...head.map((c) => h("th", { scope: "col", class: c[1] || null }, c[0])))),
    h("tbody", {}, ...rows));
}
// Re-rendering a table keeps keyboard focus on the same row's control (the page refreshes every 3 s).
function keepFocus(box, rowAttr, render) {
  const f = document.activeElement, row = f && box.contains(f) ? f.closest("[" + rowAttr + "]") : null;
  const key = row ? row.getAttribute(rowAttr) : null;
  render();
  if (key === null) return;
  const again = [...box.querySelectorAll("[" + rowAttr + "]")].find((r) => r.getAttribute(rowAttr) === key);
  const target = again && again.querySelector("button, a");
  if (target) target.focus();
}
function renderWorkers(workers) { keepFocus($("workers"), "data-worker", () => drawWorkers(workers)); }
function renderJobs(jobs) { keepFocus($("jobs"), "data-job", () => drawJobs(jobs)); }
function drawWorkers(workers) {
  const box = $("workers");
  const empty = workers.every((w) => w.status === "down") ? h("div", { class: "empty", id: "no-workers" },
      h("p", {}, h("strong", {}, "No active workers: start one with npx conductor-agent")),
      h("pre", {}, "export CONDUCTOR_URL=" + location.origin + "\\nexport CONDUCTOR_TOKEN=cnd_...     # the node's agent token\\nexport NODE_NAME=worker-node-01   # unique per node; default: the hostname\\nexport TOTAL_CPUS=96              # default: the machine's CPU count\\nnpx conductor-agent")) : "";
  if (workers.length === 0) { box.replaceChildren(empty); return; }
  const head = [["Name"], ["Hostname", "hide-s"], ["CPUs"], ["Allocated"], ["Status"], ["Heartbeat"], ["Running jobs"]];
  if (isAdmin) head.push([""]);
  box.replaceChildren(empty, h("div", { class: "scroll" }, table(head, workers.map((w) => {
    const tr = h("tr", { "data-worker": w.worker_id }, h("td", {}, w.worker_id), h("td", { class: "hide-s" }, w.hostname),
      h("td", {}, String(w.cpus)), h("td", {}, String(w.allocated_cpus)), h("td", {}, badge(w.status)),
      h("td", {}, age(w.last_heartbeat)), h("td", {}, String(w.running_jobs)));
    if (isAdmin && w.status !== "down") {
      const drain = w.status === "ready";
      tr.append(h("td", {}, h("button", { type: "button", "aria-label": (drain ? "Drain " : "Undrain ") + w.worker_id,
        onclick: () => act("/api/v1/workers/" + encodeURIComponent(w.worker_id) + (drain ? "/drain" : "/undrain")) }, drain ? "Drain" : "Undrain")));
    }
    if (isAdmin && w.status === "down") tr.append(h("td", {}));
    return tr;
  }))));
}
function drawJobs(jobs) {
  if (jobs.length === 0) { $("jobs").replaceChildren(h("p", { class: "empty" }, "No jobs match.")); return; }
  $("jobs").replaceChildren(table([["ID"], ["Name"], ["Account", "hide-s"], ["State"], ["CPUs"], ["Node", "hide-s"], ["Submitted", "hide-s"]],
    jobs.map((j) => h("tr", { "data-job": j.id }, h("td", {}, h("a", { href: "#job/" + j.id }, "#" + j.id)), h("td", {}, j.name),
      h("td", { class: "hide-s" }, j.account || ""), h("td", {}, badge(j.state)), h("td", {}, String(j.cpus)),
      h("td", { class: "hide-s" }, j.node || ""), h("td", { class: "hide-s" }, when(j.submit_time))))));
}
function renderChart(samples) {
  const W = 600, H = 160, P = 30;
  const now = Date.now(), span = chartWindow === "1h" ? 3600e3 : 86400e3;
  const x = (t) => P + ((t - (now - span)) / span) * (W - P - 5);
  const y = (u) => H - 20 - u * (H - 30);
  const pts = samples.map((s) => [x(Date.parse(s.at)), y(s.total_cpus ? s.allocated_cpus / s.total_cpus : 0)]);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Utilization over the last " + (chartWindow === "1h" ? "hour" : "24 hours") + ": " + samples.length + " samples");
  let inner = '<g fill="#5b6570" font-size="10">';
  for (const u of [0, 0.5, 1]) inner += '<line x1="' + P + '" x2="' + W + '" y1="' + y(u) + '" y2="' + y(u) + '" stroke="#dde1e6"/><text x="0" y="' + (y(u) + 3) + '">' + u * 100 + '%</text>';
  inner += '<text x="' + P + '" y="' + (H - 4) + '">-' + (chartWindow === "1h" ? "60 min" : "24 h") + '</text><text x="' + (W - 25) + '" y="' + (H - 4) + '">now</text></g>';
  if (pts.length > 0) {
    const line = pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
    inner += '<polygon fill="#2457c533" points="' + pts[0][0].toFixed(1) + "," + y(0) + " " + line + " " + pts[pts.length - 1][0].toFixed(1) + "," + y(0) + '"/>';
    inner += '<polyline fill="none" stroke="#2457c5" stroke-width="2" points="' + line + '"/>';
    const last = pts[pts.length - 1];
    inner += '<circle r="3" fill="#2457c5" cx="' + last[0].toFixed(1) + '" cy="' + last[1].toFixed(1) + '"/>';
  } else inner += '<text x="' + W / 2 + '" y="' + H / 2 + '" text-anchor="middle" fill="#5b6570">No samples yet (one a minute)</text>';
  svg.innerHTML = inner;
  $("chart").replaceChildren(svg);
}
async function act(path) {
  try { await api(path, { method: "POST" }); $("error").textContent = ""; } catch (e) { $("error").textContent = e.message; }
  refresh();
}
let chartAt = 0, chartEmpty = true;
async function refreshChart() {
  chartAt = Date.now();
  try {
    const samples = (await api("/api/v1/ui/utilization?window=" + chartWindow)).samples;
    chartEmpty = samples.length === 0; renderChart(samples);
  } catch (e) { /* shown by refresh */ }
}
let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const params = new URLSearchParams({ limit: "50" });
    if ($("state").value) params.set("state", $("state").value);
    if ($("q").value.trim()) params.set("q", $("q").value.trim());
    const [d, w, j] = await Promise.all([api("/api/v1/dashboard"), api("/api/v1/ui/workers"), api("/api/v1/ui/jobs?" + params)]);
    const r = d.resources;
    $("total").textContent = r.total_cpus; $("allocated").textContent = r.allocated_cpus;
    $("available").textContent = r.available_cpus; $("utilization").textContent = r.utilization + "%";
    renderWorkers(w.workers); renderJobs(j.jobs);
    $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    if (Date.now() - chartAt > (chartEmpty ? 2500 : 30000)) refreshChart();
    $("error").textContent = "";
    $("token-box").hidden = true;
  } catch (e) { $("error").textContent = e.message; } finally { refreshing = false; }
}
async function showDetail() {
  clearTimeout(detailTimer);
  const m = /^#job\\/(\\d+)$/.exec(location.hash);
  detailId = m ? m[1] : null;
  $("detail").hidden = !detailId; $("overview").hidden = !!detailId;
  if (!detailId) return;
  const id = detailId;
  try {
    const [job, logs] = await Promise.all([api("/api/v1/jobs/" + id), api("/api/v1/jobs/" + id + "/logs").catch((e) => {
      if (e.status === 410) return { stdout: { content: "(" + e.message + ")" } }; throw e; })]);
    if (id !== detailId) return;
    $("d-h").replaceChildren("Job #" + job.id + " " + job.name + " ", badge(job.state));
    const f = [["State", job.state], ["Exit code", job.exit_code || "–"], ["Node", job.node || "–"], ["CPUs", job.cpus],
      ["Account", job.account || "–"], ["Partition", job.partition || "–"], ["Time limit", job.time_limit === null || job.time_limit === undefined ? "none" : job.time_limit + " min"],
      ["Work dir", job.work_dir || "–"], ["Submitted", when(job.submit_time)], ["Started", when(job.start_time)], ["Ended", when(job.end_time)],
      ["Reason", job.reason || "–"], ["Owner", job.owner || "–"]];
    $("fields").replaceChildren(...f.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k }, String(v))]));
    $("script").textContent = job.script || "";
    $("stdout").textContent = logs.stdout ? logs.stdout.content : "";
    $("stderr").textContent = logs.stderr ? logs.stderr.content : "";
    const live = !FINAL.includes(job.state);
    $("cancel").hidden = !live;
    if (live) detailTimer = setTimeout(showDetail, 1000);
    $("error").textContent = "";
  } catch (e) { $("error").textContent = e.message; if (e.status !== 404) detailTimer = setTimeout(showDetail, 2000); }
}
$("cancel").onclick = async () => {
  if (!detailId) return;
  try { await api("/api/v1/jobs/" + detailId + "/cancel", { method: "POST" }); } catch (e) { $("error").textContent = e.message; }
  showDetail();
};
for (const b of document.querySelectorAll("[data-window]")) b.onclick = () => {
  chartWindow = b.dataset.window;
  for (const o of document.querySelectorAll("[data-window]")) o.setAttribute("aria-pressed", String(o === b));
  refreshChart();
};
$("filters").onsubmit = (e) => { e.preventDefault(); refresh(); };
$("state").onchange = refresh;
let typing = 0;
$("q").oninput = () => { clearTimeout(typing); typing = setTimeout(refresh, 250); };
$("token-btn").onclick = () => { $("token-box").hidden = !$("token-box").hidden; if (!$("token-box").hidden) $("token-input").focus(); };
$("token-form").onsubmit = (e) => {
  e.preventDefault();
  localStorage.setItem("conductor-token", $("token-input").value.trim());
  $("token-input").value = ""; start();
};
$("token-clear").onclick = () => { localStorage.removeItem("conductor-token"); start(); };
async function start() {
  isAdmin = await api("/api/v1/workers").then(() => true, () => false);
  refresh(); refreshChart(); showDetail();
}
window.onhashchange = showDetail;
setInterval(refresh, 3000);
start();
</script>
</body>
</html>
`;
