// fasttask dashboard: polls the API every second. No framework, no build step, nothing fetched from elsewhere.
// Paths are relative to /dashboard, so the page works behind a path prefix too.
"use strict";

const REFRESH_MS = 1000;
const SERIES_MS = 5000; // the charts have one point a minute: no need to redraw them every second
const JOB_ROWS = 30;
const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a URL that is fetched
const CHART_W = 150;
const CHART_H = 36;
const KEY_STORE = "fasttask-api-key";
const FINAL = new Set(["finished", "failed", "cancelled", "timeout"]);

const view = {
  key: sessionStorage.getItem(KEY_STORE),
  endpoint: "",
  status: "",
  clockSkewMs: 0,
  timer: null,
  seriesTimer: null,
  cursors: [], // the cursor of each page past the newest one, in the order they were opened
  nextCursor: null,
};

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (view.key) headers.Authorization = "Bearer " + view.key; // a header, never the URL
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (response.status === 401) throw new Unauthorized();
  return response;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function badge(text) {
  return el("span", { class: "badge " + (text || ""), text: text || "?" });
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 1) return (value * 1000).toFixed(0) + " ms";
  if (value < 120) return value.toFixed(1) + " s";
  return (value / 60).toFixed(1) + " min";
}

function serverNow() {
  return Date.now() + view.clockSkewMs;
}

function duration(job) {
  if (!job.started_at) return null;
  const start = Date.parse(job.started_at);
  const end = job.finished_at ? Date.parse(job.finished_at) : serverNow();
  return Math.max(0, (end - start) / 1000);
}

function shortTime(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function replaceRows(table, rows) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...rows);
}

function renderState(state) {
  view.clockSkewMs = Date.parse(state.time) - Date.now();
  const perMinute = 60 / state.window_s;
  replaceRows(
    "endpoints",
    state.queues.map((q) => {
      const recent = q.recent || {};
      const failed = (recent.failed || 0) + (recent.timeout || 0);
      const fill = el("progress", { max: q.queue_size, value: Math.min(q.queued, q.queue_size) });
      return el(
        "tr",
        { "data-endpoint": q.endpoint },
        el("td", {}, el("code", { text: q.endpoint })),
        el("td", { class: "num queued", text: q.queued }),
        el("td", { class: "num running", text: q.running }),
        el("td", { class: "num limit", text: q.queue_size }),
        el("td", {}, fill),
        el("td", { class: "num throughput", text: Math.round((recent.finished || 0) * perMinute) }),
        el("td", { class: "num failures", text: Math.round(failed * perMinute) }),
        el("td", { class: "num workers", text: q.workers.length }),
      );
    }),
  );
  replaceRows(
    "workers",
    state.workers.map((w) =>
      el(
        "tr",
        { "data-worker": w.name },
        el("td", {}, el("code", { text: w.name })),
        el("td", { text: w.endpoints.join(", ") }),
        el("td", {}, badge(w.state)),
        // one link per job, each on its own line: a worker may run several at once (FTAPI_CONCURRENCY)
        el("td", { class: "current-jobs" }, ...w.current_jobs.flatMap((id, i) => [i ? " " : "", jobLink(id, id.slice(0, 12))])),
        el("td", { class: "num", text: seconds(w.heartbeat_age_s) }),
      ),
    ),
  );
  const select = $("filter-endpoint");
  const known = new Set([...select.options].map((o) => o.value));
  for (const q of state.queues) {
    if (!known.has(q.endpoint)) select.append(el("option", { value: q.endpoint, text: q.endpoint }));
  }
}

function jobLink(id, label) {
  // a real link (middle-click works without a key); a plain click shows the JSON here, fetched with the key
  const link = el("a", { href: "jobs/" + encodeURIComponent(id), class: "mono job-link", text: label });
  link.addEventListener("click", (event) => {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    showJob(id);
  });
  return link;
}

function renderJobs(page) {
  view.nextCursor = page.next_cursor;
  $("older").disabled = !page.next_cursor;
  $("newer").disabled = view.cursors.length === 0;
  $("page-label").textContent = view.cursors.length === 0 ? "newest" : `page ${view.cursors.length + 1}`;
  replaceRows(
    "jobs",
    page.jobs.map((job) => {
      const progress = el("progress", { max: 1, value: job.progress, title: Math.round(job.progress * 100) + "%" });
      const actions = el("td");
      if (!FINAL.has(job.status)) {
        const cancel = el("button", { type: "button", class: "cancel", text: "cancel" });
        cancel.addEventListener("click", () => cancelJob(job.id, cancel));
        actions.append(cancel);
      }
      const message = job.error ? `${job.error.type}: ${job.error.message}` : job.message || "";
      return el(
        "tr",
        { "data-job-id": job.id, "data-status": job.status },
        el("td", {}, jobLink(job.id, job.id.slice(0, 12))),
        el("td", {}, el("code", { text: job.endpoint })),
        el("td", { class: "status" }, badge(job.status)),
        el("td", { class: "progress", "data-progress": job.progress }, progress, " ", Math.round(job.progress * 100) + "%"),
        el("td", { class: "message" + (job.error ? " error" : ""), text: message }),
        el("td", { class: "num", text: seconds(duration(job)) }),
        el("td", { text: shortTime(job.created_at) }),
        actions,
      );
    }),
  );
}

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    const response = await api("jobs/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
    if (!response.ok && response.status !== 409) {
      const body = await response.json().catch(() => ({}));
      setStatus(`cancel failed: ${response.status} ${body.detail || ""}`, true);
    }
  } catch (error) {
    handleError(error);
  }
  refreshSoon(0);
}

async function showJob(id) {
  try {
    const response = await api("jobs/" + encodeURIComponent(id));
    const body = await response.json();
    $("job-panel-id").textContent = id;
    $("job-panel-json").textContent = JSON.stringify(body, null, 2);
    $("job-panel").hidden = false;
  } catch (error) {
    handleError(error);
  }
}

function setStatus(text, isError = false) {
  const node = $("status");
  node.textContent = text;
  node.className = isError ? "error" : "muted";
}

function handleError(error) {
  if (error instanceof Unauthorized) {
    $("key-form").hidden = false;
    setStatus(view.key ? "the API key was refused" : "an API key is needed", true);
    $("key-input").focus();
    return true;
  }
  setStatus("cannot reach the service: " + error.message, true);
  return false;
}

async function refresh() {
  const params = new URLSearchParams({ limit: JOB_ROWS });
  if (view.endpoint) params.set("endpoint", view.endpoint);
  if (view.status) params.set("status", view.status);
  if (view.cursors.length) params.set("cursor", view.cursors[view.cursors.length - 1]);
  try {
    const [stateResponse, jobsResponse] = await Promise.all([api("dashboard/state"), api("jobs?" + params)]);
    if (!stateResponse.ok) throw new Error(`dashboard/state answered ${stateResponse.status}`);
    if (!jobsResponse.ok) throw new Error(`jobs answered ${jobsResponse.status}`);
    renderState(await stateResponse.json());
    renderJobs(await jobsResponse.json());
    $("key-form").hidden = true;
    $("forget-key").hidden = !view.key;
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (error) {
    if (handleError(error)) return; // wait for a key before polling again
  }
  refreshSoon(REFRESH_MS);
}

function refreshSoon(delay) {
  clearTimeout(view.timer);
  view.timer = setTimeout(refresh, delay);
}

// -- charts: hand-drawn SVG, one small chart per endpoint and figure -----------------------------------

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function chart(kind, endpoint, lines, bars) {
  // lines: [{name, values}] drawn as paths; bars: [{name, values}] stacked as columns. null = no data.
  const all = [...lines, ...bars];
  const n = Math.max(...all.map((l) => l.values.length), 1);
  const stacked = bars.length ? bars[0].values.map((_, i) => bars.reduce((sum, b) => sum + (b.values[i] || 0), 0)) : [];
  const top = Math.max(1e-9, ...stacked, ...lines.flatMap((l) => l.values.filter((v) => v !== null)));
  const step = CHART_W / n;
  const y = (v) => CHART_H - 1 - (v / top) * (CHART_H - 3);
  const node = svg("svg", { class: "chart", width: CHART_W, height: CHART_H, viewBox: `0 0 ${CHART_W} ${CHART_H}` });
  node.setAttribute("data-chart", kind);
  node.setAttribute("data-endpoint", endpoint);
  node.append(svg("line", { class: "axis", x1: 0, x2: CHART_W, y1: CHART_H - 0.5, y2: CHART_H - 0.5 }));
  const below = new Array(n).fill(0);
  for (const bar of bars) {
    const group = svg("g", { class: bar.name, "data-series": bar.name, "data-values": bar.values.map((v) => v ?? "").join(",") });
    bar.values.forEach((v, i) => {
      if (!v) return;
      const height = (v / top) * (CHART_H - 3);
      group.append(svg("rect", { x: i * step + 1, width: Math.max(1, step - 2), y: y(below[i] + v), height }));
      below[i] += v;
    });
    node.append(group);
  }
  for (const line of lines) {
    let d = "";
    let drawing = false;
    line.values.forEach((v, i) => {
      if (v === null) {
        drawing = false;
        return;
      }
      d += `${drawing ? "L" : "M"}${(i * step + step / 2).toFixed(1)},${y(v).toFixed(1)}`;
      drawing = true;
    });
    const path = svg("path", { class: line.name, d: d || "M0,0", "data-series": line.name });
    path.setAttribute("data-values", line.values.map((v) => v ?? "").join(","));
    node.append(path);
    line.values.forEach((v, i) => {
      // a point with no neighbour draws no line: show it as a dot
      const alone = v !== null && (line.values[i - 1] ?? null) === null && (line.values[i + 1] ?? null) === null;
      if (alone) node.append(svg("circle", { class: line.name, cx: i * step + step / 2, cy: y(v), r: 1.8 }));
    });
  }
  const title = svg("title");
  title.textContent = `${endpoint}: the last ${n} minutes; the top of the chart is ${round(top)}`;
  node.append(title);
  return node;
}

function round(value) {
  return value >= 10 ? Math.round(value) : Number(value.toPrecision(2));
}

function last(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

function chartCell(node, label) {
  return el("td", {}, node, el("span", { class: "chart-label", text: label }));
}

function renderSeries(series) {
  replaceRows(
    "charts",
    Object.entries(series.endpoints).map(([endpoint, f]) => {
      const count = (v) => (v === null ? "–" : v);
      const time = (v) => (v === null ? "–" : seconds(v));
      return el(
        "tr",
        { "data-endpoint": endpoint },
        el("td", {}, el("code", { text: endpoint })),
        chartCell(
          chart("jobs", endpoint, [], [{ name: "finished", values: f.finished }, { name: "failed", values: f.failed }]),
          `${count(last(f.finished))} / ${count(last(f.failed))}`,
        ),
        chartCell(
          chart("depth", endpoint, [{ name: "queued", values: f.queued }, { name: "running", values: f.running }], []),
          `${count(last(f.queued))} / ${count(last(f.running))}`,
        ),
        chartCell(
          chart("wait", endpoint, [{ name: "p50", values: f.wait_p50 }, { name: "p95", values: f.wait_p95 }], []),
          `${time(last(f.wait_p50))} / ${time(last(f.wait_p95))}`,
        ),
        chartCell(
          chart("run", endpoint, [{ name: "p50", values: f.run_p50 }, { name: "p95", values: f.run_p95 }], []),
          `${time(last(f.run_p50))} / ${time(last(f.run_p95))}`,
        ),
      );
    }),
  );
}

async function refreshSeries() {
  clearTimeout(view.seriesTimer);
  try {
    const response = await api("dashboard/series");
    if (!response.ok) throw new Error(`dashboard/series answered ${response.status}`);
    renderSeries(await response.json());
  } catch (error) {
    if (error instanceof Unauthorized) return; // refresh() asks for the key, then starts this again
  }
  clearTimeout(view.seriesTimer); // one loop, even when a call started while another was on its way
  view.seriesTimer = setTimeout(refreshSeries, SERIES_MS);
}

function turnPage(older) {
  if (older && view.nextCursor) view.cursors.push(view.nextCursor);
  else if (!older) view.cursors.pop();
  refreshSoon(0);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.key = $("key-input").value.trim();
    $("key-input").value = "";
    sessionStorage.setItem(KEY_STORE, view.key);
    refreshSoon(0);
    refreshSeries();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    view.key = null;
    refreshSoon(0);
  });
  $("filter-endpoint").addEventListener("change", (event) => {
    view.endpoint = event.target.value;
    view.cursors = [];
    refreshSoon(0);
  });
  $("filter-status").addEventListener("change", (event) => {
    view.status = event.target.value;
    view.cursors = [];
    refreshSoon(0);
  });
  $("older").addEventListener("click", () => turnPage(true));
  $("newer").addEventListener("click", () => turnPage(false));
  $("job-panel-close").addEventListener("click", () => {
    $("job-panel").hidden = true;
  });
  refreshSoon(0);
  refreshSeries();
});
