"""The dashboard page: one self-contained HTML document (no CDN, no web fonts).

The page holds no data of its own: its script fetches ``api/status`` on load
and every 10 seconds and builds the grid with ``textContent`` only, so a
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

  function render() {
    const parts = [];
    for (const [state, count] of Object.entries(grid.counts)) {
      if (count) parts.push(count + " " + state);
    }
    const pairs = grid.connections.reduce((n, row) => n + row.cells.length, 0);
    $("summary").textContent = grid.connections.length + " connections, " + pairs +
      " pairs: " + (parts.join(", ") || "nothing yet");
    $("redis-banner").hidden = grid.redis_ok;
    const wrap = $("grid-wrap");
    if (!grid.connections.length) {
      wrap.replaceChildren(node("p", null, "No connections registered yet."));
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
      const tr = body.appendChild(node("tr"));
      tr.dataset.connection = row.id;
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
      const response = await fetch("api/status", { cache: "no-store" });
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
    '<p id="redis-banner" class="banner" hidden>Breaker state unknown: Redis did not '
    "answer. Freshness and errors come from the store.</p>\n"
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
