// Runs of one or more experiments: the filter language with its errors shown in place, a
// virtual table over every matching run (the server pages, sorts and counts; the browser
// keeps only the rows near the viewport), runs nested under their parent, and the selection
// that feeds Compare, Delete, Restore and Download CSV.
import { ApiError, native, ui } from "../api.js";
import {
  clear, debounce, fmtDuration, fmtNum, fmtShort, fmtTime, h, hashFor, modal, poller, statusBadge, toast,
} from "../util.js";

const PAGE = 100;
const ROW_H = 34;
const OVERSCAN = 12;
const MAX_COMPARE = 1000;
const EXAMPLES = [
  "metrics.r2 > 0.3",
  "params.elasticNetParam = 0.5 AND metrics.avg_areaUnderROC > 0.3",
  "MIN(metrics.rmse) <= 1",
  'tags.estimator_name="RandomForestRegressor"',
  "attributes.status = 'RUNNING' OR metrics.loss < 0.1",
];

// An order_by / filter key for a param or metric, backticked when it is not a plain word.
export function keyRef(entity, key) {
  return /^[A-Za-z_][A-Za-z0-9_.]*$/.test(key) ? `${entity}.${key}` : `${entity}.\`${key}\``;
}

function stateFromRoute(q) {
  const list = (k) => (q.get(k) || "").split(",").filter(Boolean);
  return {
    experiments: list("e"),
    filter: q.get("q") || "",
    view: ["active", "deleted", "all"].includes(q.get("view")) ? q.get("view") : "active",
    model: ["with", "without"].includes(q.get("model")) ? q.get("model") : "",
    order: q.get("sort") || "",
    flat: q.get("flat") === "1",
    params: q.has("p") ? list("p") : null,
    metrics: q.has("m") ? list("m") : null,
  };
}

function routeFor(s) {
  return hashFor("/runs", {
    e: s.experiments, q: s.filter, view: s.view === "active" ? "" : s.view, model: s.model,
    sort: s.order, flat: s.flat ? "1" : "", p: s.params, m: s.metrics,
  });
}

export async function render(main, route) {
  const s = stateFromRoute(route.query);
  // Columns: from the address, else this browser's last choice for these experiments, else
  // the node picks them from the first page's runs (no key catalog before the first rows).
  const colsKey = `runstream.cols.${s.experiments.slice().sort().join(",") || "*"}`;
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(colsKey) || "null"); } catch { saved = null; }
  if (saved) { s.params = s.params || saved.params; s.metrics = s.metrics || saved.metrics; }
  const autoParams = !s.params, autoMetrics = !s.metrics;

  // Experiment names and the first page, together.
  const [expRes, firstRes] = await Promise.allSettled([
    ui.experiments("all"),
    ui.runs(s, {
      offset: 0, limit: PAGE, params: s.params || [], metrics: s.metrics || [], nested: !s.flat,
      withTotal: true, autoParams, autoMetrics,
    }),
  ]);
  const experiments = expRes.status === "fulfilled" ? expRes.value.experiments : [];
  const names = Object.fromEntries(experiments.map((e) => [e.experiment_id, e.name]));
  const chosen = s.experiments.map((id) => names[id] || id);
  const multiExp = s.experiments.length !== 1;
  document.title = `${s.experiments.length === 1 ? chosen[0] : "Runs"} · runstream`;
  const first = firstRes.status === "fulfilled" ? firstRes.value : null;
  s.params = s.params || (first ? first.columns.params : []);
  s.metrics = s.metrics || (first ? first.columns.metrics : []);
  let catalog = null; // every key of these experiments: loaded when the column picker opens

  const columns = buildColumns();
  function buildColumns() {
    const cols = [
      { id: "sel", width: 40, header: () => selectAllBox, cell: selectCell },
      { id: "start", label: "Start time", width: 160, sort: "attributes.start_time", dir: "DESC", cell: startCell },
      { id: "name", label: "Run name", width: 200, grow: true, sort: "attributes.run_name", dir: "ASC", cell: nameCell },
    ];
    if (multiExp) cols.push({ id: "exp", label: "Experiment", width: 130, cell: (r) => names[r.experiment_id] || r.experiment_id });
    cols.push(
      { id: "dur", label: "Duration", width: 80, cell: (r) => (r.start_time ? fmtDuration(r.start_time, r.end_time || (r.status === "RUNNING" ? null : r.start_time)) : "—") },
      { id: "user", label: "User", width: 90, sort: "attributes.user_id", dir: "ASC", cell: (r) => r.user_id || "—" },
      { id: "source", label: "Source", width: 124, sort: "attributes.source_name", dir: "ASC", cell: sourceCell },
      { id: "status", label: "Status", width: 100, sort: "attributes.status", dir: "ASC", cell: (r) => statusBadge(r.status, r.lifecycle_stage) },
    );
    for (const k of s.params) {
      cols.push({ id: `p:${k}`, group: "param", label: k, width: 100, sort: keyRef("params", k), dir: "ASC", cell: (r) => r.params[k] ?? "" });
    }
    for (const k of s.metrics) {
      cols.push({ id: `m:${k}`, group: "metric", label: k, width: 104, num: true, sort: keyRef("metrics", k), dir: "DESC", cell: (r) => fmtNum(r.metrics[k]) });
    }
    return cols;
  }

  // ---- the table model: root pages by offset, expanded subtrees spliced in ----
  const model = {
    gen: 0, total: null, pages: new Map(), pending: new Set(), expanded: [], error: null,
    reset() {
      this.gen++; this.total = null; this.pages.clear(); this.pending.clear(); this.expanded = []; this.error = null;
    },
    rowCount() {
      if (this.total === null) return 0;
      return this.total + this.expanded.reduce((a, e) => a + e.rows.length, 0);
    },
    // Visual index -> {row, rootIndex} (row null while its page loads).
    at(v) {
      let offset = 0;
      for (const e of this.expanded) {
        const pos = e.rootIndex + offset;
        if (v <= pos) break;
        if (v <= pos + e.rows.length) return { row: e.rows[v - pos - 1], rootIndex: null };
        offset += e.rows.length;
      }
      const i = v - offset;
      const page = this.pages.get(Math.floor(i / PAGE));
      return { row: page ? page[i % PAGE] || null : null, rootIndex: i };
    },
  };

  const selected = new Set();

  // ---- DOM ----
  const searchInput = h("input", {
    id: "run-filter", type: "search", value: s.filter, autocomplete: "off", spellcheck: "false",
    placeholder: "metrics.r2 > 0.3 AND params.lr = '0.01'", "aria-describedby": "filter-help filter-error",
    "aria-label": "Filter runs",
  });
  const errorBox = h("div", { id: "filter-error", role: "alert", "aria-live": "assertive" });
  const viewSeg = h("div", { class: "seg", role: "group", "aria-label": "Run state" },
    ...[["active", "Active"], ["deleted", "Deleted"], ["all", "All"]].map(([v, label]) =>
      h("button", { type: "button", "aria-pressed": String(v === s.view), dataset: { v }, onclick: () => go({ view: v }) }, label)));
  const modelSelect = h("select", { id: "model-filter", "aria-label": "Logged model", onchange: (e) => go({ model: e.target.value }) },
    h("option", { value: "" }, "Any model state"),
    h("option", { value: "with" }, "Has a logged model"),
    h("option", { value: "without" }, "No logged model"));
  modelSelect.value = s.model;
  const nestBox = h("input", { id: "nest-toggle", type: "checkbox", checked: !s.flat, onchange: (e) => go({ flat: !e.target.checked }) });

  const selCount = h("span", { class: "count", role: "status", "aria-live": "polite" }, "No runs selected");
  const btnCompare = h("button", { type: "button", class: "primary", onclick: compare }, "Compare");
  const btnDelete = h("button", { type: "button", class: "danger", onclick: () => removeOrRestore("delete") }, "Delete");
  const btnRestore = h("button", { type: "button", onclick: () => removeOrRestore("restore") }, "Restore");
  const btnCsv = h("button", { type: "button", onclick: downloadSelected }, "Download CSV");
  const btnClear = h("button", { type: "button", class: "link", onclick: () => { selected.clear(); refreshSelection(); } }, "Clear selection");

  const selectAllBox = h("input", { type: "checkbox", "aria-label": "Select all matching runs", onchange: selectAll });
  const head = h("div", { class: "vt-head", role: "row" });
  const body = h("div", { class: "vt-body", role: "rowgroup" });
  const scroller = h("div", { class: "vt-scroll", tabindex: "0", "aria-label": "Runs table, scroll to see more" },
    h("div", { role: "rowgroup", class: "vt-headgroup" }, head), body);
  const grid = h("div", { class: "vtable", role: "table", "aria-label": "Runs", "aria-rowcount": "-1" }, scroller);
  const foot = h("div", { class: "vt-foot", role: "status" });
  grid.append(foot);

  const colPicker = buildColumnPicker();
  const crumbs = h("div", { class: "crumbs" }, h("a", { href: "#/experiments" }, "Experiments"), " / ",
    s.experiments.length ? chosen.join(", ") : "all experiments");
  main.append(h("div", { class: "runs-layout" },
    h("div", { class: "page-head" },
      h("div", null, crumbs, h("h1", null, s.experiments.length === 1 ? chosen[0] : s.experiments.length ? `Runs of ${s.experiments.length} experiments` : "All runs")),
      h("span", { class: "grow" }),
      colPicker,
      h("a", { class: "btn", href: native.csvUrl(s), download: "runs.csv", id: "csv-all" }, "Download all as CSV")),
    h("form", { class: "toolbar", role: "search", onsubmit: (e) => { e.preventDefault(); go({ filter: searchInput.value.trim() }); } },
      h("div", { class: "search-wrap" }, searchInput),
      h("button", { type: "submit", class: "primary" }, "Search"),
      viewSeg, modelSelect,
      h("label", { class: "row", for: "nest-toggle" }, nestBox, "Nest child runs")),
    h("div", { id: "filter-help", class: "examples" }, "Examples: ",
      ...EXAMPLES.map((x, i) => [i ? " · " : "", h("button", { type: "button", class: "link", onclick: () => { searchInput.value = x; go({ filter: x }); } }, x)])),
    errorBox,
    h("div", { class: "selbar", role: "toolbar", "aria-label": "Selected runs" }, selCount, btnCompare, btnDelete, btnRestore, btnCsv, h("span", { class: "spacer" }), btnClear),
    grid));

  function go(change) {
    const next = { ...s, ...change };
    // A new search is a new history entry: Back returns to the previous one.
    location.hash = routeFor(next);
  }

  // ---- header ----
  // Fixed pixel columns, the same for the header and every row (a row is its own grid: a
  // flexible track would follow each row's content); the name column takes the spare width.
  function layoutColumns() {
    const fixed = columns.reduce((a, c) => a + c.width, 0);
    const spare = Math.max(0, (scroller.clientWidth || 1200) - fixed);
    const widths = columns.map((c) => c.width + (c.grow ? spare : 0));
    grid.style.setProperty("--cols", widths.map((w) => `${w}px`).join(" "));
    grid.style.setProperty("--row-w", `${widths.reduce((a, w) => a + w, 0)}px`);
  }
  layoutColumns();
  for (const c of columns) {
    let content;
    if (c.header) content = c.header();
    else if (c.sort) {
      const [cur, dir] = (s.order || "attributes.start_time DESC").split(/\s+(?=(?:ASC|DESC)$)/i);
      const active = cur === c.sort;
      const d = active ? (dir || "ASC").toUpperCase() : null;
      content = h("button", {
        type: "button", class: "sort", title: `Sort by ${c.label}`,
        onclick: () => go({ order: `${c.sort} ${active ? (d === "DESC" ? "ASC" : "DESC") : c.dir}` }),
      }, c.group ? h("span", { class: "group" }, c.group === "param" ? "param" : "metric") : null,
        h("span", { class: "label" }, c.label),
        active ? h("span", { "aria-hidden": "true" }, d === "DESC" ? "▼" : "▲") : null);
      c.ariaSort = active ? (d === "DESC" ? "descending" : "ascending") : "none";
    } else content = c.label;
    head.append(h("div", { role: "columnheader", class: c.num ? "num" : "", "aria-sort": c.ariaSort, title: c.label }, content));
  }

  // ---- cells ----
  function selectCell(r) {
    return h("input", {
      type: "checkbox", checked: selected.has(r.run_id), "aria-label": `Select run ${r.name || r.run_id}`,
      onchange: (e) => { if (e.target.checked) selected.add(r.run_id); else selected.delete(r.run_id); refreshSelection(); },
    });
  }
  function startCell(r) {
    return h("a", { href: `#/run/${encodeURIComponent(r.run_id)}`, tabindex: "-1", title: fmtTime(r.start_time) }, fmtShort(r.start_time));
  }
  function nameCell(r, v) {
    const parts = [];
    if (r.depth) parts.push(h("span", { class: "indent", style: { width: `${r.depth * 18}px` } }));
    if (!r.depth && r.children && !s.flat) {
      const open = model.expanded.some((e) => e.runId === r.run_id);
      parts.push(h("button", {
        type: "button", class: "twisty", "aria-expanded": String(open),
        "aria-label": `${open ? "Hide" : "Show"} ${r.children} child run${r.children === 1 ? "" : "s"} of ${r.name || r.run_id}`,
        onclick: () => toggle(r, v),
      }, open ? "▾" : "▸"));
    } else if (!s.flat) parts.push(h("span", { class: "indent", style: { width: "20px" } }));
    parts.push(h("a", { href: `#/run/${encodeURIComponent(r.run_id)}`, title: r.name || r.run_id }, r.name || r.run_id.slice(0, 12)));
    if (r.children && (s.flat || r.depth)) parts.push(h("span", { class: "chip", title: "child runs" }, `${r.children}`));
    if (r.has_model) parts.push(h("span", { class: "model-mark", title: "has a logged model" }, "model"));
    return parts;
  }
  function sourceCell(r) {
    const src = r.source_name || "";
    const short = src.split(/[\\/]/).pop();
    return h("span", { title: `${src}${r.git_commit ? `\ncommit ${r.git_commit}` : ""}` },
      short || "—", r.git_commit ? h("span", { class: "muted small mono" }, ` @${r.git_commit.slice(0, 7)}`) : null);
  }

  // ---- rendering the window ----
  const rendered = new Map(); // key -> element
  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; draw(); });
  }

  function draw() {
    const count = model.rowCount();
    body.style.height = `${count * ROW_H}px`;
    grid.setAttribute("aria-rowcount", String(count + 1));
    const top = scroller.scrollTop;
    const viewH = scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(count - 1, Math.ceil((top + viewH) / ROW_H) + OVERSCAN);
    const want = new Set();
    const missing = new Set();
    for (let v = first; v <= last; v++) {
      const { row, rootIndex } = model.at(v);
      if (!row) missing.add(Math.floor(rootIndex / PAGE));
      const key = row ? `${row.run_id}@${v}@${row._v || 0}` : `loading@${v}`;
      want.add(key);
      let el = rendered.get(key);
      if (!el) {
        el = row ? rowElement(row, v) : h("div", { class: "vt-row loading", role: "row" },
          ...columns.map(() => h("div", { role: "cell" })));
        el.style.top = `${v * ROW_H}px`;
        rendered.set(key, el);
        body.appendChild(el);
      }
    }
    for (const [key, el] of rendered) {
      if (!want.has(key) && !el.contains(document.activeElement)) { el.remove(); rendered.delete(key); }
    }
    // Pages are asked for once scrolling pauses: a fling through 100,000 rows must not ask
    // for every page it passes.
    if (missing.size) loadVisible();
    drawFoot(first, last);
    if (model.total !== null && model.marked !== model.gen) {
      // For benchmarks and curious people: when the rows of this search were first on screen.
      model.marked = model.gen;
      performance.mark("runstream:rows");
    }
  }

  function rowElement(r, v) {
    const el = h("div", {
      class: `vt-row${r.lifecycle_stage === "deleted" ? " deleted" : ""}`, role: "row",
      "aria-rowindex": String(v + 2), "aria-selected": String(selected.has(r.run_id)),
      dataset: { runId: r.run_id },
    });
    for (const c of columns) {
      el.appendChild(h("div", { role: "cell", class: c.num ? "num" : "" }, c.cell(r, v)));
    }
    return el;
  }

  function drawFoot(first, last) {
    clear(foot);
    if (model.error) { foot.append("Search failed: ", model.error); return; }
    if (model.total === null) { foot.append("Loading…"); return; }
    const n = model.total;
    const kids = model.expanded.reduce((a, e) => a + e.rows.length, 0);
    foot.append(...[
      h("span", { id: "runs-total" }, `${n.toLocaleString()} ${s.flat ? "run" : "top-level run"}${n === 1 ? "" : "s"}`),
      kids ? h("span", null, `+ ${kids} child runs shown`) : null,
      n ? h("span", null, `rows ${(first + 1).toLocaleString()}–${Math.min(last + 1, model.rowCount()).toLocaleString()}`) : null,
      h("span", null, `sorted by ${s.order || "start time, newest first"}`)].filter(Boolean));
    if (n === 0) {
      clear(body);
      rendered.clear();
      body.append(h("div", { class: "empty" }, s.filter ? "No run matches this filter." : s.view === "deleted" ? "No deleted runs." : "No runs yet."));
    }
  }

  // ---- data ----
  const params = () => ({ params: s.params, metrics: s.metrics });

  async function loadPage(p, { force = false } = {}) {
    if (!force && (model.pages.has(p) || model.pending.has(p))) return;
    model.pending.add(p);
    const gen = model.gen;
    try {
      const res = await ui.runs(s, { offset: p * PAGE, limit: PAGE, ...params(), nested: !s.flat, withTotal: p === 0 || model.total === null });
      if (gen !== model.gen) return;
      if (res.total !== null && res.total !== undefined) model.total = res.total;
      model.pages.set(p, res.rows.map((r) => ({ ...r, _v: stamp(r) })));
      showError(null);
    } catch (e) {
      if (gen !== model.gen) return;
      model.error = e.message;
      if (e instanceof ApiError && e.status === 400) showError(e);
      else toast(`Could not load runs: ${e.message}`, "error");
      model.total = model.total ?? 0;
    } finally {
      model.pending.delete(p);
    }
    schedule();
  }

  const loadVisible = debounce(() => {
    const count = model.rowCount();
    const top = scroller.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(count - 1, Math.ceil((top + (scroller.clientHeight || 600)) / ROW_H) + OVERSCAN);
    const pages = new Set();
    for (let v = first; v <= last; v++) {
      const { row, rootIndex } = model.at(v);
      if (!row && rootIndex !== null) pages.add(Math.floor(rootIndex / PAGE));
    }
    for (const p of pages) loadPage(p);
  }, 40);

  // A row's version: a changed row is redrawn, an unchanged one keeps its element (and focus).
  function stamp(r) {
    return JSON.stringify([r.name, r.status, r.end_time, r.lifecycle_stage, r.children, r.params, r.metrics, r.has_model]);
  }

  async function toggle(r) {
    const i = model.expanded.findIndex((e) => e.runId === r.run_id);
    if (i >= 0) model.expanded.splice(i, 1);
    else {
      const rootIndex = findRootIndex(r.run_id);
      if (rootIndex === null) return;
      try {
        const res = await ui.subtree(s, r.run_id, params());
        model.expanded.push({ runId: r.run_id, rootIndex, rows: res.rows.map((x) => ({ ...x, _v: stamp(x) })) });
        model.expanded.sort((a, b) => a.rootIndex - b.rootIndex);
        if (res.truncated) toast("Showing the first 2,000 runs below this run");
      } catch (e) {
        toast(`Could not load child runs: ${e.message}`, "error");
        return;
      }
    }
    // Rows below moved: redraw everything in the window.
    for (const el of rendered.values()) el.remove();
    rendered.clear();
    schedule();
    requestAnimationFrame(() => {
      const btn = body.querySelector(`[data-run-id="${CSS.escape(r.run_id)}"] .twisty`);
      if (btn) btn.focus();
    });
  }

  function findRootIndex(runId) {
    for (const [p, rows] of model.pages) {
      const j = rows.findIndex((x) => x.run_id === runId);
      if (j >= 0) return p * PAGE + j;
    }
    return null;
  }

  function showError(e) {
    clear(errorBox);
    searchInput.removeAttribute("aria-invalid");
    if (!e) return;
    searchInput.setAttribute("aria-invalid", "true");
    const text = s.filter;
    const pos = e.position;
    const box = h("div", { class: "filter-error" }, h("strong", null, "This filter does not parse. "), e.message);
    if (pos !== null && pos !== undefined && pos <= text.length) {
      const bad = text.slice(pos, pos + Math.max(1, (/^\S+/.exec(text.slice(pos)) || [""])[0].length));
      box.append(h("pre", { "aria-hidden": "true" },
        text.slice(0, pos), h("mark", null, bad || " "), text.slice(pos + bad.length), "\n",
        h("span", { class: "caret" }, " ".repeat(pos) + "^")));
      // Put the cursor where the error is, so the user can fix it there.
      searchInput.focus();
      try { searchInput.setSelectionRange(pos, pos + bad.length); } catch { /* type=search */ }
    }
    errorBox.append(box);
  }

  // ---- selection ----
  function refreshSelection() {
    const n = selected.size;
    selCount.textContent = n ? `${n.toLocaleString()} selected` : "No runs selected";
    btnCompare.disabled = n < 2 || n > MAX_COMPARE;
    btnCompare.title = n > MAX_COMPARE ? `Compare takes at most ${MAX_COMPARE} runs` : n < 2 ? "Select two or more runs" : "";
    btnDelete.disabled = n === 0 || s.view === "deleted";
    btnRestore.disabled = n === 0 || s.view === "active";
    btnCsv.disabled = n === 0;
    btnClear.disabled = n === 0;
    for (const el of body.querySelectorAll(".vt-row[data-run-id]")) {
      const on = selected.has(el.dataset.runId);
      el.setAttribute("aria-selected", String(on));
      const box = el.querySelector('input[type="checkbox"]');
      if (box) box.checked = on;
    }
    selectAllBox.checked = n > 0 && model.total !== null && n >= model.total;
    selectAllBox.indeterminate = n > 0 && !selectAllBox.checked;
  }

  async function selectAll(e) {
    if (!e.target.checked) { selected.clear(); refreshSelection(); return; }
    try {
      const res = await ui.runIds(s);
      res.run_ids.forEach((id) => selected.add(id));
      // Children shown under their parents are part of the selection too.
      for (const ex of model.expanded) ex.rows.forEach((r) => selected.add(r.run_id));
      if (res.truncated) toast(`Selected the first ${res.run_ids.length.toLocaleString()} of ${res.total.toLocaleString()} runs`);
    } catch (err) {
      toast(err.message, "error");
    }
    refreshSelection();
  }

  function compare() {
    location.hash = hashFor("/compare", { runs: [...selected] });
  }

  async function removeOrRestore(action) {
    const ids = [...selected];
    const del = action === "delete";
    const n = ids.length;
    const res = await modal({
      title: del ? `Delete ${n} run${n === 1 ? "" : "s"}?` : `Restore ${n} run${n === 1 ? "" : "s"}?`,
      confirm: del ? "Delete" : "Restore",
      danger: del,
      body: h("div", null,
        h("p", null, del
          ? "Deleted runs are kept for the retention period (30 days by default): find them under the Deleted state and restore them until then."
          : "Restored runs are active again, with all their data."),
        h("label", { class: "check" },
          h("input", { type: "checkbox", name: "descendants", checked: true, id: "with-descendants" }),
          del ? "Also delete descendant runs" : "Also restore descendant runs")),
      onConfirm: async ({ descendants }) => {
        const out = del ? await native.deleteRuns(ids, descendants) : await native.restoreRuns(ids, descendants);
        const count = del ? out.runs_deleted : out.runs_restored;
        toast(`${del ? "Deleted" : "Restored"} ${count} run${count === 1 ? "" : "s"}`);
      },
    });
    if (res) {
      selected.clear();
      reload();
    }
  }

  function downloadSelected() {
    // A form post: the browser saves the answer (Content-Disposition: attachment).
    const form = h("form", { method: "post", action: ui.csvOfRuns, style: { display: "none" } },
      h("input", { type: "hidden", name: "run_ids", value: [...selected].join(",") }),
      s.order ? h("input", { type: "hidden", name: "order_by", value: s.order }) : null);
    document.body.appendChild(form);
    form.submit();
    form.remove();
  }

  // ---- column picker: the key catalog is loaded when it opens ----
  function buildColumnPicker() {
    const pickedP = new Set(s.params), pickedM = new Set(s.metrics);
    const body = h("div", null, h("p", { class: "muted small" }, "Loading the keys of these experiments…"));
    const list = (title, items, picked) => h("fieldset", null, h("legend", null, title),
      items.length ? items.map((x) => h("label", null,
        h("input", { type: "checkbox", checked: picked.has(x.key), onchange: (e) => { if (e.target.checked) picked.add(x.key); else picked.delete(x.key); } }),
        h("span", null, x.key), h("span", { class: "count", title: "runs with this key" }, `${x.runs}`))) : h("div", { class: "muted small" }, "none logged"));
    const apply = h("button", { type: "button", class: "primary", onclick: () => {
      const next = { params: [...pickedP].sort(), metrics: [...pickedM].sort() };
      try { localStorage.setItem(colsKey, JSON.stringify(next)); } catch { /* private mode */ }
      go(next);
    } }, "Apply");
    const details = h("details", { class: "picker" },
      h("summary", { class: "btn", role: "button" }, `Columns (${s.params.length + s.metrics.length})`),
      h("div", { class: "pop" }, body, h("div", { class: "row" }, h("span", { class: "spacer" }), apply)));
    details.addEventListener("toggle", async () => {
      if (!details.open || catalog) return;
      try {
        catalog = await ui.keys(s.experiments);
      } catch (e) {
        clear(body).append(h("p", { class: "muted" }, `Could not load the keys: ${e.message}`));
        return;
      }
      clear(body).append(list("Metrics", catalog.metrics, pickedM), list("Params", catalog.params, pickedP));
    });
    return details;
  }

  // ---- live updates: refresh the pages on screen ----
  function reload() {
    model.reset();
    for (const el of rendered.values()) el.remove();
    rendered.clear();
    refreshSelection();
    loadPage(0);
  }

  async function refreshVisible() {
    const first = Math.floor(scroller.scrollTop / ROW_H);
    const last = first + Math.ceil((scroller.clientHeight || 600) / ROW_H);
    const pages = new Set();
    for (let v = first; v <= last; v++) {
      const { rootIndex } = model.at(v);
      if (rootIndex !== null) pages.add(Math.floor(rootIndex / PAGE));
    }
    if (!pages.size) pages.add(0);
    await Promise.all([...pages].map((p) => loadPage(p, { force: true })));
    for (const ex of model.expanded) {
      try {
        const res = await ui.subtree(s, ex.runId, params());
        ex.rows = res.rows.map((x) => ({ ...x, _v: stamp(x) }));
      } catch { /* kept as it was */ }
    }
    schedule();
  }

  function anyRunningOnScreen() {
    for (const el of body.querySelectorAll(".st-RUNNING")) if (el) return true;
    return false;
  }

  scroller.addEventListener("scroll", schedule, { passive: true });
  const onResize = debounce(() => { layoutColumns(); schedule(); }, 50);
  window.addEventListener("resize", onResize);
  refreshSelection();
  if (first) {
    model.total = first.total;
    model.pages.set(0, first.rows.map((r) => ({ ...r, _v: stamp(r) })));
    draw();
  } else if (firstRes.reason instanceof ApiError && firstRes.reason.status === 400) {
    model.error = firstRes.reason.message;
    model.total = 0;
    showError(firstRes.reason);
    draw();
  } else loadPage(0);

  let ticks = 0;
  const stop = poller(async () => {
    ticks++;
    // Every 3 s while a run on screen is running; every 15 s otherwise (new runs appear).
    if (anyRunningOnScreen() || ticks % 5 === 0) await refreshVisible();
  }, 3000);
  return () => { stop(); window.removeEventListener("resize", onResize); };
}
