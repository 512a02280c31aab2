"""The dashboard page: one self-contained HTML document (no CDN, no web fonts).

The page holds no data of its own: its script fetches one page of
``api/status`` (problems first, filtered by state, searched by connection, 50
connections a page; the view is kept in the query string) on load and every
10 seconds and builds the grid with ``textContent`` only, so a
connection name or an upstream error message can never become markup. The
server sends a Content-Security-Policy that allows exactly this script and
style (by hash) and no other origin.
"""

from __future__ import annotations

import base64
import hashlib

STYLE = """
:root { color-scheme: light; font-family: system-ui, "Segoe UI", Roboto, sans-serif; }
body { margin: 0; background: #f5f6f8; color: #1d2127; }
header { padding: 16px 24px 4px; }
h1 { font-size: 20px; margin: 0 0 4px; }
#summary { font-size: 14px; margin: 4px 0; }
#refresh { font-size: 12px; color: #5f6773; margin: 0; }
#refresh.error { color: #b00020; font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; list-style: none; padding: 0;
  margin: 10px 0 0; font-size: 13px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 20px; height: 14px; border-radius: 3px; }
main { padding: 8px 24px 24px; }
.banner { background: #fff4e5; border: 1px solid #f0b35b; padding: 8px 12px;
  border-radius: 6px; margin: 0 0 10px; }
table { border-collapse: separate; border-spacing: 4px; }
th { text-align: left; font-weight: 600; font-size: 13px; padding: 4px 8px; }
thead th { color: #4a5260; }
tbody th { max-width: 220px; overflow-wrap: anywhere; }
tbody th .sub { display: block; font-weight: 400; color: #5f6773; font-size: 12px; }
td.cell { padding: 0; border-radius: 6px; min-width: 128px; height: 50px; }
td.cell button { all: unset; box-sizing: border-box; display: flex; flex-direction: column;
  justify-content: center; width: 100%; height: 100%; padding: 5px 10px; cursor: pointer;
  border-radius: 6px; }
td.cell button:focus-visible { outline: 3px solid #1a73e8; outline-offset: 2px; }
td.cell.selected { box-shadow: 0 0 0 3px #1a73e8; }
.label { font-weight: 700; font-size: 13px; }
.lag { font-size: 12px; }
.state-healthy { background: #2e7d32; color: #fff; }
.state-paused { background: #f9a825; color: #1d2127; }
.state-open { background: #c62828; color: #fff; }
.state-half-open { background: #ef6c00; color: #1d2127; }
.state-halted { background: #5b1647; color: #fff; }
.state-blocked { background: #6b7078; color: #fff; }
.state-unknown { background: #d9dce1; color: #1d2127; }
td.cell.none { background: transparent; border: 1px dashed #c3c8cf; color: #8a919c;
  text-align: center; font-size: 12px; }
.stale { outline: 3px solid #ffd600; outline-offset: -3px;
  background-image: repeating-linear-gradient(135deg, rgba(255, 214, 0, 0.6) 0 5px,
  transparent 5px 13px); }
.swatch.stale { background-color: #fff; }
td.stale .label, td.stale .lag { text-shadow: 0 0 3px rgba(0, 0, 0, 0.9); }
td.stale.state-paused .label, td.stale.state-paused .lag,
td.stale.state-half-open .label, td.stale.state-half-open .lag,
td.stale.state-unknown .label, td.stale.state-unknown .lag { text-shadow: 0 0 3px #fff; }
.badge { display: inline-block; margin-left: 6px; padding: 0 5px; border-radius: 3px;
  background: #ffd600; color: #1d2127; font-size: 11px; font-weight: 700; }
.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px;
  margin: 4px 0 10px; }
#filters { display: flex; flex-wrap: wrap; gap: 6px; }
#filters button { font: inherit; font-size: 13px; padding: 4px 10px; border-radius: 14px;
  border: 1px solid #c3c8cf; background: #fff; color: #1d2127; cursor: pointer;
  display: inline-flex; align-items: center; gap: 6px; }
#filters button[aria-pressed="true"] { background: #1d2127; color: #fff; border-color: #1d2127; }
#filters button:disabled { opacity: 0.45; cursor: default; }
#filters .count { font-weight: 700; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; }
#search { font: inherit; font-size: 14px; padding: 5px 10px; width: 240px;
  border: 1px solid #c3c8cf; border-radius: 6px; }
.pager { display: flex; align-items: center; gap: 8px; font-size: 13px; }
.pager button { font: inherit; font-size: 13px; padding: 4px 10px; }
tbody tr th { border-left: 6px solid transparent; }
tr.cat-halted th { border-left-color: #5b1647; }
tr.cat-open th, tr.cat-half-open th { border-left-color: #c62828; }
tr.cat-blocked th { border-left-color: #6b7078; }
tr.cat-paused th { border-left-color: #f9a825; }
tr.cat-failing th { border-left-color: #ad1457; }
tr.cat-stale th { border-left-color: #ffd600; }
.state-failing { background: #ad1457; color: #fff; }
.dot.state-stale { background: #ffd600; }
.badge.failing { background: #fff; color: #ad1457; }
#details { margin-top: 16px; background: #fff; border: 1px solid #d5d9df; border-radius: 8px;
  padding: 12px 16px; max-width: 900px; }
#details h2 { font-size: 16px; margin: 0 0 8px; overflow-wrap: anywhere; }
#details dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px;
  margin: 0; font-size: 13px; }
#details dt { font-weight: 600; color: #4a5260; }
#details dd { margin: 0; overflow-wrap: anywhere; white-space: pre-wrap; }
#details button { margin-top: 10px; }
"""

SCRIPT = """
"use strict";
(function () {
  const REFRESH_MS = 10000;
  const $ = (id) => document.getElementById(id);
  let grid = null;
  // The view (filter, search, page) lives in the query string, so a link or a
  // reload shows the same page; the server filters, sorts and pages.
  const FILTER_LABELS = {
    "all": "All", "problems": "Problems", "halted": "Halted", "open": "Open",
    "half-open": "Half-open", "blocked": "Blocked", "paused": "Paused",
    "failing": "Failing", "stale": "Stale", "unknown": "Unknown", "healthy": "Healthy",
  };
  const params = new URLSearchParams(location.search);
  const view = {
    state: FILTER_LABELS[params.get("state")] ? params.get("state") : "all",
    q: params.get("q") || "",
    page: Math.max(1, parseInt(params.get("page") || "1", 10) || 1),
  };
  function query() {
    const out = new URLSearchParams();
    out.set("state", view.state);
    if (view.q) out.set("q", view.q);
    out.set("page", String(view.page));
    out.set("per_page", "50");
    return out;
  }
  function navigate(changes) {
    Object.assign(view, changes);
    const shown = query();
    shown.delete("per_page");
    history.replaceState(null, "", "?" + shown.toString() + location.hash);
    refresh();
  }
  // "#connection/entity-type" opens that cell's details on load (links, screenshots).
  const hash = decodeURIComponent(location.hash.slice(1));
  let selected = hash.includes("/") ?
    JSON.stringify([hash.slice(0, hash.lastIndexOf("/")), hash.slice(hash.lastIndexOf("/") + 1)]) :
    null;

  function node(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined && text !== null) el.textContent = String(text);
    return el;
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "\\u2013";
    const s = Math.round(seconds);
    if (s < 120) return s + "s";
    if (s < 7200) return Math.round(s / 60) + "m";
    if (s < 172800) return (s / 3600).toFixed(1) + "h";
    return (s / 86400).toFixed(1) + "d";
  }
  function when(instant) {
    return instant ? instant.replace("T", " ").slice(0, 19) + " UTC" : "\\u2013";
  }
  function facts(row, cell) {
    const list = [
      ["Connection", row.name + " (" + row.id + ")"],
      ["Entity type", cell.entity_type],
      ["State", cell.state + (cell.stale ? ", stale" : "")],
      ["Until", when(cell.until)],
      ["Reason", cell.reason || "\\u2013"],
      ["Last success", cell.never_synced ? "never" : when(cell.last_success_at)],
      ["Freshness lag", duration(cell.lag_s) + " (stale after " +
        duration(row.interval_s * grid.stale_after_intervals) + ")"],
      ["Last run", cell.last_run_status || "\\u2013"],
      ["Last error", cell.last_error ?
        (cell.last_error_kind ? "[" + cell.last_error_kind + "] " : "") + cell.last_error :
        "\\u2013"],
      ["Records", cell.records + " (" + cell.deleted + " deleted, " + cell.quarantined +
        " quarantined)"],
    ];
    if (cell.parked_until) {
      list.push(["Parked until", when(cell.parked_until) + ": " + cell.parked_reason]);
    }
    if (cell.held_deletions || cell.reconcile_note) {
      list.push(["Deletions", (cell.held_deletions ? cell.held_deletions + " held. " : "") +
        (cell.reconcile_note || "")]);
    }
    if (cell.upstream_report) {
      list.push(["Unified API reports", cell.upstream_report]);
    }
    return list;
  }
  function keyOf(row, cell) { return JSON.stringify([row.id, cell.entity_type]); }

  function showDetails() {
    const panel = $("details");
    document.querySelectorAll("td.selected").forEach((td) => td.classList.remove("selected"));
    const found = selected && grid && find(selected);
    if (!found) { panel.hidden = true; return; }
    const [row, cell, td] = found;
    if (td) td.classList.add("selected");
    $("details-title").textContent = row.name + " \\u2013 " + cell.entity_type;
    const dl = $("details-list");
    dl.replaceChildren();
    for (const [term, value] of facts(row, cell)) {
      dl.append(node("dt", null, term), node("dd", null, value));
    }
    panel.hidden = false;
  }
  function find(key) {
    for (const row of grid.connections) {
      for (const cell of row.cells) {
        if (keyOf(row, cell) === key) {
          const td = Array.from(document.querySelectorAll("td.cell"))
            .find((el) => el.dataset.key === key);
          return [row, cell, td];
        }
      }
    }
    return null;
  }

  function renderControls() {
    const filters = $("filters");
    filters.replaceChildren();
    for (const [name, label] of Object.entries(FILTER_LABELS)) {
      const count = grid.filters[name] || 0;
      const button = filters.appendChild(node("button"));
      button.type = "button";
      button.dataset.filter = name;
      button.setAttribute("aria-pressed", String(view.state === name));
      button.disabled = !count && view.state !== name;
      if (!["all", "problems"].includes(name)) {
        button.append(node("span", "dot state-" + name));
      }
      button.append(node("span", null, label), node("span", "count", count));
      button.addEventListener("click", () => navigate({ state: name, page: 1 }));
    }
    const v = grid.view;
    const first = v.matched ? (v.page - 1) * v.per_page + 1 : 0;
    const last = Math.min(v.matched, v.page * v.per_page);
    $("page-info").textContent = "Page " + v.page + " of " + v.pages + " \u00b7 " +
      first + "\u2013" + last + " of " + v.matched + " connections";
    $("prev").disabled = v.page <= 1;
    $("next").disabled = v.page >= v.pages;
    view.page = v.page;
  }

  function render() {
    const parts = [];
    for (const [state, count] of Object.entries(grid.counts)) {
      if (count) parts.push(count + " " + state);
    }
    $("summary").textContent = grid.view.total + " connections, " +
      (grid.filters.problems || 0) + " with a problem; pairs: " +
      (parts.join(", ") || "nothing yet");
    $("redis-banner").hidden = grid.redis_ok;
    renderControls();
    $("beat-banner").hidden = !grid.beat_notice;
    $("beat-banner").textContent = grid.beat_notice || "";
    $("held-banner").hidden = !grid.held_notice;
    $("held-banner").textContent = grid.held_notice || "";
    const wrap = $("grid-wrap");
    if (!grid.connections.length) {
      wrap.replaceChildren(node("p", null, grid.view.total ?
        "No connection matches this filter." : "No connections registered yet."));
      showDetails();
      return;
    }
    const table = node("table", "grid");
    table.id = "grid";
    const head = node("tr");
    head.append(node("th", null, "Connection"));
    for (const entity of grid.entity_types) {
      const th = node("th", null, entity);
      th.scope = "col";
      head.append(th);
    }
    table.appendChild(node("thead")).appendChild(head);
    const body = table.appendChild(node("tbody"));
    for (const row of grid.connections) {
      const tr = body.appendChild(node("tr", "cat-" + row.category));
      tr.dataset.connection = row.id;
      tr.dataset.category = row.category;
      const th = tr.appendChild(node("th", null, row.name));
      th.scope = "row";
      th.append(node("span", "sub", row.id + " \\u00b7 every " + duration(row.interval_s)));
      const byEntity = new Map(row.cells.map((cell) => [cell.entity_type, cell]));
      for (const entity of grid.entity_types) {
        const cell = byEntity.get(entity);
        if (!cell) {
          const td = tr.appendChild(node("td", "cell none", "not synced"));
          td.title = row.name + " does not sync " + entity;
          continue;
        }
        const td = tr.appendChild(
          node("td", "cell state-" + cell.state + (cell.stale ? " stale" : "")));
        td.dataset.state = cell.state;
        td.dataset.stale = String(cell.stale);
        td.dataset.key = keyOf(row, cell);
        const button = td.appendChild(node("button"));
        button.type = "button";
        button.title = facts(row, cell).map(([t, v]) => t + ": " + v).join("\\n");
        const label = button.appendChild(node("span", "label", cell.state));
        if (cell.stale) label.append(node("span", "badge", "stale"));
        if (cell.category === "failing") label.append(node("span", "badge failing", "failing"));
        const due = cell.until && cell.until > grid.generated_at;
        const until = due ? " \u00b7 until " + cell.until.slice(11, 16) : "";
        button.append(node("span", "lag", "lag " + duration(cell.lag_s) + until));
        button.addEventListener("click", () => {
          selected = selected === td.dataset.key ? null : td.dataset.key;
          showDetails();
        });
      }
    }
    wrap.replaceChildren(table);
    showDetails();
  }

  async function refresh() {
    try {
      const response = await fetch("api/status?" + query().toString(), { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      grid = await response.json();
      render();
      document.body.dataset.loaded = "true";
      $("refresh").className = "";
      $("refresh").textContent = "Updated " + when(grid.generated_at) +
        "; refreshes every " + REFRESH_MS / 1000 + " s.";
    } catch (error) {
      $("refresh").className = "error";
      $("refresh").textContent = "Refresh failed (" + error.message + ")" +
        (grid ? "; showing " + when(grid.generated_at) + "." : ".");
    }
  }
  $("details-close").addEventListener("click", () => { selected = null; showDetails(); });
  const search = $("search");
  search.value = view.q;
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => navigate({ q: search.value.trim(), page: 1 }), 250);
  });
  $("prev").addEventListener("click", () => navigate({ page: view.page - 1 }));
  $("next").addEventListener("click", () => navigate({ page: view.page + 1 }));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { selected = null; showDetails(); }
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
"""

_LEGEND = (
    ("healthy", "healthy"),
    ("paused", "paused (rate limited)"),
    ("open", "open breaker"),
    ("half-open", "half-open (probing)"),
    ("halted", "halted (needs a new token)"),
    ("blocked", "blocked entity type"),
    ("unknown", "unknown (Redis unreachable)"),
)


def _legend() -> str:
    items = [
        f'<li><span class="swatch state-{state}"></span>{label}</li>' for state, label in _LEGEND
    ]
    items.append('<li><span class="swatch stale"></span>stale (lag over 3 intervals)</li>')
    items.append('<li><span class="swatch state-failing"></span>failing (last run failed)</li>')
    return "\n".join(items)


PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>entity-sync health</title>\n<style>"
    + STYLE
    + "</style>\n</head>\n<body>\n<header>\n<h1>entity-sync health</h1>\n"
    '<p id="summary" aria-live="polite">Loading\u2026</p>\n'
    '<p id="refresh"></p>\n'
    '<ul class="legend" aria-label="Legend">\n' + _legend() + "\n</ul>\n</header>\n<main>\n"
    '<div class="toolbar">\n<div id="filters" role="group" aria-label="Filter by state"></div>\n'
    '<input id="search" type="search" placeholder="Search connections" '
    'aria-label="Search connection" autocomplete="off">\n'
    '<div class="pager"><button type="button" id="prev">\u2190 Previous</button>'
    '<span id="page-info"></span><button type="button" id="next">Next \u2192</button></div>\n'
    "</div>\n"
    '<p id="redis-banner" class="banner" hidden>Breaker state unknown: Redis did not '
    "answer. Freshness and errors come from the store.</p>\n"
    '<p id="beat-banner" class="banner" role="status" hidden></p>\n'
    '<p id="held-banner" class="banner" role="status" hidden></p>\n'
    '<div id="grid-wrap"><noscript>This page needs JavaScript; the same data is at '
    '<a href="api/status">api/status</a>.</noscript></div>\n'
    '<section id="details" aria-live="polite" hidden>\n<h2 id="details-title"></h2>\n'
    '<dl id="details-list"></dl>\n<button type="button" id="details-close">Close</button>\n'
    "</section>\n</main>\n<script>" + SCRIPT + "</script>\n</body>\n</html>\n"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own script and style run; data comes from this origin only.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
