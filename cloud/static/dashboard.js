"use strict";
// The iotfl dashboard: polls the cloud's REST API (relative paths, so it works behind a path prefix) every
// POLL_MS and redraws. No libraries: the chart is hand-written SVG.
const POLL_MS = 2000;
const PAGE_SIZE = 50;
const $ = (id) => document.getElementById(id);
const dash = "–";
const pct = (x) => (x === null || x === undefined) ? dash : (100 * x).toFixed(1) + " %";
const num = (x) => (x === null || x === undefined) ? dash : Number(x).toLocaleString("en-US");
const ago = (t) => {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 60 ? s.toFixed(0) + " s ago" : s < 3600 ? (s / 60).toFixed(0) + " min ago" : (s / 3600).toFixed(1) + " h ago";
};
const cell = (row, content) => {
  const td = document.createElement("td");
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  row.appendChild(td);
  return td;
};
const pill = (text, kind) => {
  const span = document.createElement("span");
  span.className = "pill " + kind;
  span.textContent = text;
  return span;
};
const fill = (tbody, rows, build) => {
  tbody.replaceChildren();
  for (const item of rows) {
    const row = document.createElement("tr");
    build(row, item);
    tbody.appendChild(row);
  }
};
let page = 0;

function chart(status) {
  const W = 420, H = 220, left = 36, right = 384, top = 10, bottom = 196;
  const last = Math.max(status.total_rounds, 1, ...status.history.map((h) => h.round));
  const losses = status.history.map((h) => h.loss).filter((l) => l !== null);
  const maxLoss = Math.max(0.5, ...losses) * 1.1;
  const x = (r) => left + (right - left) * r / last;
  const ya = (a) => bottom - (bottom - top) * a;
  const yl = (l) => bottom - (bottom - top) * l / maxLoss;
  let svg = "";
  for (const a of [0, 0.25, 0.5, 0.75, 1]) {
    svg += `<line x1="${left}" x2="${right}" y1="${ya(a)}" y2="${ya(a)}" stroke="#e3e6ee"/>` +
           `<text x="${left - 4}" y="${ya(a) + 3}" font-size="9" text-anchor="end" fill="#2f6fd6">${a * 100}%</text>` +
           `<text x="${right + 4}" y="${ya(a) + 3}" font-size="9" fill="#d0602f">${(a * maxLoss).toFixed(2)}</text>`;
  }
  const step = Math.max(1, Math.ceil(last / 10));
  for (let r = 0; r <= last; r += step) {
    svg += `<text x="${x(r)}" y="${H - 8}" font-size="9" text-anchor="middle" fill="#6b7385">${r}</text>`;
  }
  const acc = status.history.filter((h) => h.accuracy !== null);
  const line = (pts, y, key) => pts.map((p, i) => `${i ? "L" : "M"}${x(p.round).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  const accLine = [{ round: 0, accuracy: status.initial_accuracy }, ...acc];
  svg += `<path d="${line(accLine, ya, "accuracy")}" fill="none" stroke="#2f6fd6" stroke-width="2"/>`;
  const lossPts = status.history.filter((h) => h.loss !== null);
  if (lossPts.length) svg += `<path d="${line(lossPts, yl, "loss")}" fill="none" stroke="#d0602f" stroke-width="1.5" stroke-dasharray="4 3"/>`;
  svg += `<circle class="pt-init" cx="${x(0)}" cy="${ya(status.initial_accuracy)}" r="3" fill="#fff" stroke="#2f6fd6" stroke-width="1.5"/>`;
  for (const h of acc) {
    svg += `<circle class="pt-acc" data-round="${h.round}" cx="${x(h.round)}" cy="${ya(h.accuracy)}" r="3" fill="#2f6fd6"><title>round ${h.round}: ${pct(h.accuracy)}</title></circle>`;
  }
  // Personalization: mean accuracy on the devices' own held-out samples, personal head and global model.
  const local = status.history.filter((h) => h.p_accuracy !== null && h.p_accuracy !== undefined);
  if (local.length) {
    svg += `<path d="${line(local, ya, "l_accuracy")}" fill="none" stroke="#6b7385" stroke-width="1.5" stroke-dasharray="2 2"/>`;
    svg += `<path d="${line(local, ya, "p_accuracy")}" fill="none" stroke="#1f9d55" stroke-width="2"/>`;
    for (const h of local) {
      svg += `<circle class="pt-pacc" data-round="${h.round}" cx="${x(h.round)}" cy="${ya(h.p_accuracy)}" r="2.5" fill="#1f9d55"><title>round ${h.round}: personalized ${pct(h.p_accuracy)}, global ${pct(h.l_accuracy)} on ${h.p_devices} devices' own samples</title></circle>`;
    }
  }
  for (const h of lossPts) {
    svg += `<circle class="pt-loss" data-round="${h.round}" cx="${x(h.round)}" cy="${yl(h.loss)}" r="2.5" fill="#d0602f"><title>round ${h.round}: loss ${h.loss.toFixed(3)}</title></circle>`;
  }
  svg += `<text x="${(left + right) / 2}" y="${H}" font-size="9" text-anchor="middle" fill="#6b7385">round</text>`;
  $("chart").innerHTML = svg;
}

function renderStatus(status) {
  $("fleet").textContent = status.fleet;
  $("round").textContent = `${status.round} / ${status.total_rounds}`;
  $("version").textContent = status.model_version;
  const latest = status.history.length ? status.history[status.history.length - 1].accuracy : status.initial_accuracy;
  $("accuracy").textContent = pct(latest);
  $("devices-seen").textContent = status.devices_seen;
  const state = $("state");
  state.textContent = status.state;
  state.className = "pill" + (status.state === "done" ? " done" : "");
  $("deadline").textContent = status.state === "done" ? "training finished" :
    status.deadline ? `deadline in ${Math.max(0, status.deadline - Date.now() / 1000).toFixed(0)} s` : "waiting for gateways";
  fill($("history"), [...status.history].reverse(), (row, h) => {
    cell(row, h.round); cell(row, pct(h.accuracy)); cell(row, h.loss === null ? dash : h.loss.toFixed(3));
    cell(row, num(h.k)); cell(row, num(h.n)); cell(row, num(h.bytes_up));
    cell(row, h.closed_at ? new Date(h.closed_at * 1000).toLocaleTimeString() : dash);
    cell(row, h.p_devices ? pct(h.l_accuracy) : dash); cell(row, h.p_devices ? pct(h.p_accuracy) : dash);
  });
  chart(status);
}

function renderGateways(overview) {
  $("progress-round").textContent = overview.round;
  fill($("progress"), overview.gateways, (row, g) => {
    row.dataset.gw = g.id;
    cell(row, g.id);
    const p = g.progress && g.progress.round === overview.round ? g.progress : null;
    const live = p ? Math.max(p.live, p.devices) : 0;
    const bar = document.createElement("span");
    bar.className = "bar";
    const inner = document.createElement("span");
    inner.style.width = (live ? Math.min(100, 100 * p.devices / live) : g.posted ? 100 : 0) + "%";
    bar.appendChild(inner);
    const td = cell(row, bar);
    td.appendChild(document.createTextNode(p ? num(p.accepted) : dash));
    cell(row, p ? `${p.devices} / ${p.live}` : dash);
    cell(row, g.posted ? pill("posted", "done") : pill("collecting", "waiting"));
  });
  fill($("gateways"), overview.gateways, (row, g) => {
    row.dataset.gw = g.id;
    cell(row, g.id); cell(row, ago(g.last_seen)); cell(row, `${g.devices_online} / ${g.devices_known}`);
    cell(row, num(g.bytes_up)); cell(row, g.rounds_reported);
  });
  const reasons = Object.entries(overview.rejected);
  $("no-rejections").hidden = reasons.length > 0;
  fill($("rejected"), reasons, (row, [reason, count]) => {
    row.dataset.reason = reason;
    cell(row, reason); cell(row, num(count));
    cell(row, overview.gateways.filter((g) => g.rejected[reason]).map((g) => `${g.id}: ${g.rejected[reason]}`).join(", "));
  });
}

function renderDevices(data) {
  const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
  if (page >= pages) page = pages - 1;
  $("devices-total").textContent = `(${num(data.total)})`;
  $("page").textContent = `page ${page + 1} of ${pages}`;
  $("prev").disabled = page === 0;
  $("next").disabled = page + 1 >= pages;
  fill($("devices"), data.items, (row, d) => {
    row.dataset.dev = d.dev;
    cell(row, d.dev); cell(row, d.gw); cell(row, pill(d.state, d.state));
    cell(row, d.battery === null ? dash : (100 * d.battery).toFixed(0) + " %");
    cell(row, d.rssi === null ? dash : d.rssi + " dBm"); cell(row, d.ram_class ?? dash); cell(row, d.fw ?? dash);
    cell(row, ago(d.updated_at));
  });
}

async function getJson(path) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), POLL_MS - 200);
  try {
    const response = await fetch(path, { signal: controller.signal, cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return await response.json();
  } finally {
    clearTimeout(timer);
  }
}

function devicesPath() {
  const query = new URLSearchParams({ offset: page * PAGE_SIZE, limit: PAGE_SIZE });
  if ($("state-filter").value) query.set("state", $("state-filter").value);
  return "api/v1/devices?" + query;
}

async function poll() {
  try {
    const [status, overview, devices] = await Promise.all(
      [getJson("api/v1/status"), getJson("api/v1/gateways"), getJson(devicesPath())]);
    renderStatus(status);
    renderGateways(overview);
    renderDevices(devices);
    $("error").textContent = "";
    $("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.polls = Number(document.body.dataset.polls || 0) + 1;
  } catch (err) {
    $("error").textContent = "cannot reach the cloud: " + err.message;
  }
}

$("prev").addEventListener("click", () => { page = Math.max(0, page - 1); poll(); });
$("next").addEventListener("click", () => { page += 1; poll(); });
$("state-filter").addEventListener("change", () => { page = 0; poll(); });
poll();
setInterval(poll, POLL_MS);
