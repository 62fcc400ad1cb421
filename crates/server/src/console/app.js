// Arbiter's operator console: plain JavaScript over the HTTP/JSON API,
// with the caller's token. Every value from the server is written as text
// (never as HTML), and the page loads nothing but this file and its styles.
"use strict";

const CONFLICT_CODES = ["ALREADY_EXISTS", "ABORTED", "FAILED_PRECONDITION"];
const WINDOWS = { hour: 3600, day: 86400, week: 7 * 86400 };
const COLLECTIONS = ["vms", "users", "prompts", "policies"];
const COLORS = ["#2155c4", "#d9822b", "#3a9e5c", "#b3261e", "#7b4fc4", "#1a8c99", "#c44f8e", "#7a6a3a", "#5b6475"];

const session = {
  get token() { return sessionStorage.getItem("arbiter.token") || ""; },
  get tenant() { return sessionStorage.getItem("arbiter.tenant") || ""; },
  set(token, tenant) {
    sessionStorage.setItem("arbiter.token", token);
    sessionStorage.setItem("arbiter.tenant", tenant);
  },
  clear() {
    sessionStorage.removeItem("arbiter.token");
    sessionStorage.removeItem("arbiter.tenant");
  },
};

// The live watch of the page shown, if any: stopped when the page changes.
let watching = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    for (const v of [].concat(value)) if (v !== "" && v !== undefined) url.searchParams.append(key, v);
  }
  const response = await fetch(url, { headers: { authorization: `Bearer ${session.token}` } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function problemText(error) {
  if (error instanceof ApiError) {
    const reason = error.problem && error.problem.reason ? `${error.problem.reason}: ` : "";
    return `${error.status} ${reason}${error.message}`;
  }
  return String(error);
}

function parent() {
  return `tenants/${session.tenant}`;
}

function time(text) {
  if (!text) return "";
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? text : d.toLocaleString();
}

function historyLink(name) {
  return el("a", { href: `#/history/${encodeURIComponent(name)}` }, name);
}

// ---- Conflicts -------------------------------------------------------------

function colorOf(keys) {
  const map = new Map();
  keys.forEach((key, i) => map.set(key, COLORS[i % COLORS.length]));
  return map;
}

// Stacked bars: one bar per bucket, one colour per reason; the time axis
// and the scale are text beside the drawing, which stretches to the width.
function barChart(stats, byKey) {
  const buckets = (stats.series[0] && stats.series[0].counts.length) || 0;
  const keys = [...new Set(stats.series.map(byKey))];
  const colors = colorOf(keys);
  const sums = new Array(buckets).fill(0);
  for (const s of stats.series) s.counts.forEach((c, i) => { sums[i] += Number(c); });
  const max = Math.max(1, ...sums);
  const width = Math.max(buckets, 1), height = 100;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "chart",
    role: "img", "aria-label": "conflicts per bucket, by reason",
  });
  const base = new Array(buckets).fill(0);
  for (const key of keys) {
    const counts = new Array(buckets).fill(0);
    for (const s of stats.series) if (byKey(s) === key) s.counts.forEach((c, i) => { counts[i] += Number(c); });
    counts.forEach((c, i) => {
      if (!c) return;
      const h = (c / max) * height;
      const rect = svg("rect", { x: i, y: height - base[i] - h, width: 0.9, height: h, fill: colors.get(key) });
      const title = svg("title", {});
      title.textContent = `${key}: ${c}`;
      rect.append(title);
      chart.append(rect);
      base[i] += h;
    });
  }
  const legend = el("div", { class: "legend" },
    keys.map((key) => el("span", {}, el("span", { class: "swatch", style: `background:${colors.get(key)}` }), key || "(none)")));
  return el("div", {},
    el("div", { class: "muted axis" }, `max ${max} per ${stats.bucket}`),
    chart,
    el("div", { class: "muted axis between" }, el("span", {}, time(stats.startTime)), el("span", {}, time(stats.endTime))),
    legend);
}

// A page's parts, without the absent ones.
function parts(...nodes) {
  return nodes.filter((n) => n !== null && n !== undefined);
}

// Totals by one attribute as horizontal bars.
function breakdown(title, stats, byKey, testid) {
  const totals = new Map();
  for (const s of stats.series) totals.set(byKey(s), (totals.get(byKey(s)) || 0) + Number(s.total));
  const rows = [...totals.entries()].sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...rows.map((r) => r[1]));
  return el("div", { class: "card" },
    el("h3", {}, title),
    rows.length === 0 ? el("p", { class: "muted" }, "none") :
      el("table", { "data-testid": testid },
        el("tbody", {}, rows.map(([key, n]) => el("tr", { "data-key": key },
          el("td", {}, key || "(none)"),
          el("td", { class: "num" }, n),
          el("td", { style: "width:40%" }, el("div", { class: "bar", style: `width:${(n / max) * 100}%` })))))));
}

// The window a page shows (`?window=hour|day|week`) and its buttons.
function timeWindow(pageName, query, ...more) {
  const name = WINDOWS[query.get("window")] ? query.get("window") : "hour";
  const end = new Date();
  const start = new Date(end.getTime() - WINDOWS[name] * 1000);
  const toolbar = el("div", { class: "toolbar" },
    Object.keys(WINDOWS).map((w) => el("button", {
      type: "button", class: "plain", "aria-pressed": String(w === name),
      onclick: () => { location.hash = `#/${pageName}?window=${w}`; },
    }, `Last ${w}`)),
    more);
  return { start, end, toolbar };
}

async function conflictsPage(page, query) {
  const { start, end, toolbar } = timeWindow("conflicts", query,
    el("span", { class: "muted" }, "409-class refusals: ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION"));
  page.replaceChildren(el("h2", {}, "Conflicts"), toolbar, el("p", { class: "muted" }, "Loading…"));
  const stats = await api(`/v1/${parent()}/conflictStats`, {
    startTime: start.toISOString(), endTime: end.toISOString(), codes: CONFLICT_CODES,
    maxHotResources: 10, maxRecent: 20,
  });
  stats.series = stats.series || [];
  const total = Number(stats.total || 0);
  const hot = stats.hotResources || [];
  const recent = stats.recent || [];
  page.replaceChildren(...parts(
    el("h2", {}, "Conflicts"), toolbar,
    el("div", { class: "cards" },
      el("div", { class: "card" }, el("h3", {}, "Conflicts"),
        el("div", { class: "total", "data-testid": "total" }, total),
        el("div", { class: "muted" }, `${time(stats.startTime)} – ${time(stats.endTime)}, buckets of ${stats.bucket}`)),
      el("div", { class: "card wide" }, el("h3", {}, "Over time, by reason"), barChart(stats, (s) => s.reason)),
      breakdown("By reason", stats, (s) => s.reason, "by-reason"),
      breakdown("By collection", stats, (s) => s.collection, "by-collection"),
      breakdown("By tenant", stats, (s) => s.tenant, "by-tenant"),
      el("div", { class: "card wide" }, el("h3", {}, "Most contended resources"),
        hot.length === 0 ? el("p", { class: "muted" }, "none") :
          el("div", { class: "scroll" }, el("table", { "data-testid": "hot" },
            el("thead", {}, el("tr", {}, el("th", {}, "resource"), el("th", {}, "conflicts"), el("th", {}, "top reason"), el("th", {}, "last"))),
            el("tbody", {}, hot.map((h) => el("tr", {},
              el("td", {}, historyLink(h.name)), el("td", { class: "num" }, h.count),
              el("td", {}, h.topReason), el("td", {}, time(h.lastTime)))))))),
      el("div", { class: "card wide" }, el("h3", {}, "Latest conflicts"),
        recent.length === 0 ? el("p", { class: "muted" }, "none") :
          el("div", { class: "scroll" }, el("table", { "data-testid": "recent" },
            el("thead", {}, el("tr", {}, ["time", "tenant", "principal", "method", "resource", "reason"].map((h) => el("th", {}, h)))),
            el("tbody", {}, recent.map((e) => el("tr", {},
              el("td", {}, time(e.time)), el("td", {}, e.tenant), el("td", {}, e.principal), el("td", {}, e.method),
              el("td", {}, e.resource.split("/").length >= 4 ? historyLink(e.resource) : e.resource),
              el("td", {}, e.reason)))))))),
    stats.truncated ? el("p", { class: "muted" }, "Some series were left out to stay within bounds.") : null));
}

// ---- Resources -------------------------------------------------------------

function stateOf(item) {
  return item.state || "";
}

async function resourcesPage(page, query) {
  const collection = COLLECTIONS.includes(query.get("collection")) ? query.get("collection") : "vms";
  if (session.tenant === "-") {
    page.replaceChildren(el("h2", {}, "Resources"),
      el("p", { class: "muted" }, "Sign in with one tenant to browse its resources."));
    return;
  }
  const select = el("select", {
    "aria-label": "collection",
    onchange: (e) => { location.hash = `#/resources?collection=${e.target.value}`; },
  }, COLLECTIONS.map((c) => {
    const option = el("option", { value: c }, c);
    option.selected = c === collection;
    return option;
  }));
  const live = el("span", { class: "live" });
  const table = el("tbody");
  page.replaceChildren(el("h2", {}, "Resources"), el("div", { class: "toolbar" }, select, live),
    el("div", { class: "card scroll" }, el("table", { "data-testid": "resources" },
      el("thead", {}, el("tr", {}, ["name", "state", "updated", "by"].map((h) => el("th", {}, h)))), table)));
  const items = [];
  let token = "";
  do {
    const answer = await api(`/v1/${parent()}/${collection}`, { pageSize: 200, pageToken: token });
    const key = Object.keys(answer).find((k) => Array.isArray(answer[k]));
    items.push(...(key ? answer[key] : []));
    token = answer.nextPageToken || "";
  } while (token && items.length < 1000);
  const rows = new Map();
  const row = (item) => el("tr", {}, el("td", {}, historyLink(item.name)), el("td", {}, stateOf(item)),
    el("td", {}, time(item.updateTime)), el("td", {}, item.updatedBy || ""));
  for (const item of items) rows.set(item.name, row(item));
  const render = () => table.replaceChildren(...[...rows.keys()].sort().map((k) => rows.get(k)));
  render();
  // Live: changes of this collection as server-sent events.
  watchChanges({ collections: collection }, (change) => {
    const object = change.vm || change.user || change.prompt || change.policy;
    if (!change.name) return;
    if (change.type === "DELETED") rows.delete(change.name);
    else if (object) rows.set(change.name, row(object));
    render();
    live.textContent = `live · revision ${change.revision}`;
  }, live);
}

// Follows the tenant's changes with fetch (EventSource cannot send a
// token) on the text/event-stream form of WatchChanges.
function watchChanges(params, onChange, status) {
  const controller = new AbortController();
  watching = controller;
  const url = new URL(`/v1/${parent()}/changes:watch`, location.origin);
  for (const [k, v] of Object.entries(params)) url.searchParams.append(k, v);
  (async () => {
    try {
      const response = await fetch(url, {
        headers: { authorization: `Bearer ${session.token}`, accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      status.textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (data) onChange(JSON.parse(data));
        }
      }
      status.textContent = "live updates ended; reload to resume";
    } catch (error) {
      if (!controller.signal.aborted) status.textContent = `no live updates: ${error.message}`;
    }
  })();
}

// ---- History ---------------------------------------------------------------

function camel(path) {
  return path.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}

// The value of a changed field path (`display_name`, `labels.env`, `state`).
function valueAt(object, path) {
  if (!object) return undefined;
  if (path.startsWith("labels.")) return (object.labels || {})[path.slice(7)];
  return path.split(".").reduce((o, p) => (o === undefined || o === null ? undefined : o[camel(p)]), object);
}

function shown(value) {
  if (value === undefined || value === null || value === "") return "—";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

async function historyPage(page, name) {
  page.replaceChildren(el("h2", {}, "History"), el("p", {}, el("code", {}, name)), el("p", { class: "muted" }, "Loading…"));
  const answer = await api(`/v1/${name}/revisions`, { pageSize: 100 });
  const revisions = answer.revisions || [];
  const objectOf = (c) => c.vm || c.user || c.prompt || c.policy || null;
  const list = revisions.map((change, i) => {
    const after = objectOf(change);
    const before = revisions[i + 1] ? objectOf(revisions[i + 1]) : null;
    const fields = change.changedFields || [];
    return el("div", { class: "card change", "data-revision": change.revision },
      el("h3", {}, `${change.operation || change.type} · revision ${change.revision}`),
      el("div", { class: "muted" }, `${time(change.time)} by ${change.principal}${change.requestId ? ` · request ${change.requestId}` : ""}`),
      fields.length === 0 ? null :
        el("div", { class: "scroll" }, el("table", { class: "diff", "data-testid": "diff" },
          el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "before"), el("th", {}, "after"))),
          el("tbody", {}, fields.map((f) => el("tr", { "data-field": f },
            el("td", {}, f),
            el("td", { class: "before" }, el("code", {}, shown(valueAt(before, f)))),
            el("td", { class: "after" }, el("code", {}, shown(valueAt(after, f))))))))));
  });
  page.replaceChildren(...parts(el("h2", {}, "History"), el("p", {}, el("code", {}, name)),
    revisions.length === 0 ? el("p", { class: "muted" }, "No retained changes.") : el("div", {}, list),
    answer.nextPageToken ? el("p", { class: "muted" }, "Older changes: arbiter history NAME.") : null));
}

// ---- Policies --------------------------------------------------------------

function duration(d) {
  if (!d) return "—";
  const seconds = Number(String(d).replace(/s$/, ""));
  if (Number.isNaN(seconds)) return String(d);
  if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 1) return `${Math.round(seconds * 1e4) / 10} ms`;
  return `${seconds} s`;
}

async function policiesPage(page, query) {
  const { start, end, toolbar } = timeWindow("policies", query);
  page.replaceChildren(el("h2", {}, "Policies"), toolbar, el("p", { class: "muted" }, "Loading…"));
  const stats = await api(`/v1/${parent()}/policyStats`, { startTime: start.toISOString(), endTime: end.toISOString() });
  // The tenant's policies, also those not evaluated in the window, for
  // tokens that may read policies (admins); others see the evaluations.
  const bound = new Map();
  let listed = false;
  if (session.tenant !== "-") {
    try {
      const list = await api(`/v1/${parent()}/policies`, { pageSize: 1000 });
      for (const p of list.policies || []) bound.set(p.name, p);
      listed = true;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 403)) throw error;
    }
  }
  const rows = new Map();
  for (const name of bound.keys()) rows.set(name, { policy: name });
  for (const p of stats.policies || []) rows.set(p.policy, p);
  const columns = [
    ["evaluations", "evaluations"], ["allowed", "allowed"], ["denied", "denied"], ["warned", "warnings"],
    ["auditDenied", "audit denials"], ["faulted", "faults"], ["faultsIgnored", "faults ignored"], ["busy", "busy"],
  ];
  const table = el("table", { "data-testid": "policies" },
    el("thead", {}, el("tr", {}, el("th", {}, "policy"), el("th", {}, "mode"),
      columns.map(([, label]) => el("th", {}, label)), el("th", {}, "p50"), el("th", {}, "p99"))),
    el("tbody", {}, [...rows.keys()].sort().map((name) => {
      const p = rows.get(name);
      const policy = bound.get(name);
      return el("tr", { "data-policy": name },
        el("td", {}, policy ? historyLink(name) : name),
        el("td", {}, policy ? policy.mode || "ENFORCE" : listed ? "deleted" : "—"),
        columns.map(([field]) => el("td", { class: "num", "data-field": field }, Number(p[field] || 0))),
        el("td", { class: "num" }, duration(p.p50Latency)),
        el("td", { class: "num", "data-field": "p99" }, duration(p.p99Latency)));
    })));
  page.replaceChildren(...parts(el("h2", {}, "Policies"), toolbar,
    el("div", { class: "card scroll" }, rows.size === 0 ? el("p", { class: "muted" }, "No policies.") : table),
    el("p", { class: "muted" }, `${time(stats.startTime)} – ${time(stats.endTime)}; latency as the bucket bound (50 µs to 2.5 s).`),
    stats.truncated ? el("p", { class: "muted" }, "Some records were left out to stay within bounds.") : null));
}

// ---- Shell -----------------------------------------------------------------

function showSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("page").replaceChildren();
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
}

async function route() {
  if (watching) { watching.abort(); watching = null; }
  if (!session.token) { showSignIn(); return; }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-tenant").textContent = session.tenant === "-" ? "every tenant" : `tenant ${session.tenant}`;
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search] = hash.split("?");
  const query = new URLSearchParams(search || "");
  const page = document.getElementById("page");
  const name = path.split("/")[0] || "conflicts";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === name);
  try {
    if (name === "history") await historyPage(page, decodeURIComponent(path.slice("history/".length)));
    else if (name === "resources") await resourcesPage(page, query);
    else if (name === "policies") await policiesPage(page, query);
    else await conflictsPage(page, query);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      session.clear();
      showSignIn("That token is not valid.");
      return;
    }
    page.replaceChildren(el("p", { class: "error", role: "alert", "data-testid": "error" }, problemText(error)));
  }
}

document.getElementById("sign-in").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = document.getElementById("token").value.trim();
  const tenant = document.getElementById("tenant").value.trim();
  session.set(token, tenant);
  document.getElementById("token").value = "";
  if (location.hash.startsWith("#/")) route();
  else location.hash = "#/conflicts";
});
document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  route();
});
window.addEventListener("hashchange", route);
route();
