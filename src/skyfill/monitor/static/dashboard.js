// skyfill dashboard: polls the JSON API every 2 s and redraws in place (no page reload).
// Charts are hand-written SVG: no library, nothing loaded from elsewhere.
"use strict";

const POLL_MS = 2000;
const SVGNS = "http://www.w3.org/2000/svg";
const COLORS = ["#3b6fd8", "#e8833a", "#3aa17e", "#c94f6d", "#8a63d2", "#b59b2c", "#5b9bb8"];
const W = 600, H = 220, LEFT = 56, RIGHT = 12, TOP = 12, BOTTOM = 32;

let selected = null;

function byId(id) { return document.getElementById(id); }

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
  if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
  if (a >= 1e3) return (v / 1e3).toPrecision(3) + "k";
  if (a === 0) return "0";
  return Number(v.toPrecision(3)).toString();
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  if (s > 0 && s < 10 && s !== Math.round(s)) return s.toFixed(1) + "s";
  s = Math.round(s);
  if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  if (s >= 60) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return s + "s";
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(v)));
  for (const step of [1, 2, 2.5, 5, 10]) if (v <= step * e) return step * e;
  return 10 * e;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function placeholder(svg, message) {
  clear(svg);
  svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, message));
}

function yAxis(svg, top) {
  for (let i = 0; i <= 4; i++) {
    const y = H - BOTTOM - (H - TOP - BOTTOM) * i / 4;
    svg.appendChild(svgEl("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "grid" }));
    svg.appendChild(svgEl("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, fmt(top * i / 4)));
  }
}

// A line over time: xs in seconds, ys the values.
function lineChart(svg, xs, ys, color) {
  if (xs.length < 2) { placeholder(svg, "waiting for samples…"); return; }
  clear(svg);
  const x0 = xs[0], span = (xs[xs.length - 1] - x0) || 1;
  const top = niceMax(Math.max(...ys));
  const iw = W - LEFT - RIGHT, ih = H - TOP - BOTTOM;
  yAxis(svg, top);
  for (let i = 0; i <= 4; i++) {
    svg.appendChild(svgEl("text", { x: LEFT + iw * i / 4, y: H - BOTTOM + 16, "text-anchor": "middle" },
      duration(span * i / 4)));
  }
  const points = xs.map((x, i) =>
    (LEFT + iw * (x - x0) / span).toFixed(1) + "," + (TOP + ih * (1 - ys[i] / top)).toFixed(1)).join(" ");
  svg.appendChild(svgEl("polyline", { class: "line", fill: "none", stroke: color, "stroke-width": 2, points }));
}

// Horizontal bars: items = [[label, value], ...].
function barChart(svg, items) {
  if (!items.length) { placeholder(svg, "no outcomes yet"); return; }
  clear(svg);
  const row = Math.min(28, (H - TOP) / items.length), labelW = 150;
  const top = niceMax(Math.max(...items.map(([, v]) => v)));
  items.forEach(([label, value], i) => {
    const y = TOP + row * i, w = Math.max(1, (W - labelW - 70) * value / top);
    svg.appendChild(svgEl("text", { x: labelW - 8, y: y + row * 0.65, "text-anchor": "end" }, label));
    const bar = svgEl("rect", { class: "bar", x: labelW, y: y + 3, width: w.toFixed(1),
      height: Math.max(2, row - 6), fill: COLORS[i % COLORS.length] });
    bar.appendChild(svgEl("title", {}, label + ": " + value));
    svg.appendChild(bar);
    svg.appendChild(svgEl("text", { x: labelW + w + 6, y: y + row * 0.65 }, fmt(value)));
  });
}

function table(node, headers, rows) {
  clear(node);
  const head = node.createTHead().insertRow();
  for (const h of headers) { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); }
  const body = node.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const c of r) tr.insertCell().textContent = c;
  }
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function selectFromHash() {
  const match = /job=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function renderJobs(jobs) {
  const list = byId("jobs");
  clear(list);
  for (const job of jobs) {
    const a = document.createElement("a");
    a.href = "#job=" + encodeURIComponent(job.job_id);
    a.textContent = job.job_id;
    if (job.job_id === selected) a.className = "selected";
    const small = document.createElement("small");
    small.textContent = job.status + (job.live ? " · live" : "") + " · " + job.done + "/" + job.total;
    a.appendChild(small);
    const li = document.createElement("li");
    li.appendChild(a);
    list.appendChild(li);
  }
  if (!jobs.length) list.textContent = "no jobs yet";
}

function renderJob(data) {
  const s = data.snapshot, points = data.series;
  const main = byId("job");
  main.dataset.done = s.done;
  byId("job-title").textContent = s.job_id + " — " + s.status + ", phase " + s.phase;
  const runner = byId("runner");
  clear(runner);
  runner.append("runner " + (s.runner.runner || "-") + ", heartbeat " + duration(s.runner.heartbeat_age_s) + " ago ");
  const badge = document.createElement("span");
  badge.className = s.runner.silent ? "silent" : s.runner.live ? "live" : "muted";
  badge.textContent = s.runner.silent ? "SILENT: no live runner" : s.runner.live ? "live" : "not running";
  runner.appendChild(badge);
  const pct = s.total ? 100 * s.done / s.total : 0;
  byId("bar-fill").style.width = pct.toFixed(1) + "%";
  byId("done").textContent = s.done + " / " + s.total + " DIDs (" + pct.toFixed(1) + "%)";
  byId("eta").textContent = "ETA " + duration(s.eta_s);
  const kpis = [
    ["DIDs/s now", fmt(s.dids_per_s_recent)], ["DIDs/s avg", fmt(s.dids_per_s)],
    ["records/s now", fmt(s.records_per_s_recent)], ["records", fmt(s.records)],
    ["requests", fmt(s.requests)], ["429s", fmt(s.rate_limited)], ["retries", fmt(s.retries)],
    ["received", bytes(s.bytes)], ["RSS", bytes(s.rss)],
  ];
  const box = byId("kpis");
  clear(box);
  for (const [k, v] of kpis) {
    const div = document.createElement("div");
    div.className = "kpi";
    div.textContent = k;
    const b = document.createElement("b");
    b.textContent = v;
    div.appendChild(b);
    box.appendChild(div);
  }
  const xs = points.map((p) => p.elapsed_s);
  lineChart(byId("chart-dids"), xs, points.map((p) => p.dids_per_s || 0), COLORS[0]);
  lineChart(byId("chart-records"), xs, points.map((p) => p.records_per_s || 0), COLORS[1]);
  lineChart(byId("chart-done"), xs, points.map((p) => p.done), COLORS[2]);
  barChart(byId("chart-outcomes"), Object.entries(s.by_status));
  table(byId("hosts"), ["host", "requests", "429s", "errors", "received", "p50", "p95", "p99", "rate", "in flight"],
    s.hosts.map((h) => [h.host, h.requests, h.rate_limited, h.errors, bytes(h.bytes),
      fmt(h.p50_ms) + " ms", fmt(h.p95_ms) + " ms", fmt(h.p99_ms) + " ms",
      h.rate_per_s === null ? "-" : fmt(h.rate_per_s) + "/s", h.in_flight]));
  table(byId("workers"), ["worker", "heartbeat", "current task", "items done"],
    s.workers.map((w) => [w.worker_id || "-",
      w.heartbeat_at ? duration(s.now - w.heartbeat_at) + " ago" : "-",
      w.current_task || "-", w.items_done === undefined ? "-" : w.items_done]));
  byId("report-link").href = "/report/" + encodeURIComponent(s.job_id);
}

async function poll() {
  try {
    const jobs = await getJSON("/api/jobs");
    selected = selectFromHash() || (jobs.length ? jobs[0].job_id : null);
    renderJobs(jobs);
    if (selected) renderJob(await getJSON("/api/jobs/" + encodeURIComponent(selected)));
    byId("updated").textContent = "updated " + new Date().toLocaleTimeString();
    byId("error").hidden = true;
  } catch (err) {
    const box = byId("error");
    box.textContent = "cannot update: " + err.message;
    box.hidden = false;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("hashchange", () => { selected = selectFromHash(); });
poll();
