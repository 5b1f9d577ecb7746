// One run: name (rename in place), status, times, source and git commit, params, metrics
// with latest/min/max and history charts (downsampled by the node), tags, note, artifacts,
// and what is needed to reproduce it. A running run updates while it logs.
import { artifactUrl, native } from "../api.js";
import { PALETTE, historyTraces, plot, purge } from "../charts.js";
import { renderMarkdown } from "../markdown.js";
import {
  add, clear, copyButton, fmtBytes, icon, fmtDuration, fmtNum, fmtTime, h, hashFor, modal, poller, statusBadge, toast,
} from "../util.js";

const IMAGE = /\.(png|jpe?g|gif|webp|bmp|avif)$/i;
const TEXT = /(\.(txt|log|json|ya?ml|csv|tsv|md|py|toml|cfg|ini|xml|sh|r|sql|ipynb|conda|lock|html?)|(^|\/)(MLmodel|requirements\.txt|Dockerfile|LICENSE|README))$/i;
const PREVIEW_BYTES = 256 * 1024;
const CHART_POINTS = 400;

function shellQuote(arg) {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${String(arg).replace(/'/g, "'\\''")}'`;
}

export async function render(main, route) {
  const runId = route.parts[1];
  let run;
  try {
    run = await native.run(runId);
  } catch (e) {
    main.append(h("div", { class: "error-box", role: "alert" }, e.status === 404 ? `No run ${runId}: ${e.message}` : e.message));
    return null;
  }
  let experimentName = run.experiment_id;
  try { experimentName = (await native.experiment(run.experiment_id)).name; } catch { /* id shown */ }

  const state = {
    x: route.query.get("x") === "time" ? "time" : "step",
    chartKeys: (route.query.get("metrics") || "").split(",").filter(Boolean),
    editingNote: false,
    renaming: false,
  };
  const metricKeys = () => Object.keys(run.metrics).sort();
  if (!state.chartKeys.length) state.chartKeys = metricKeys().slice(0, 4);

  // ---- skeleton ----
  const titleBox = h("div", { class: "run-title" });
  const facts = h("dl", { class: "facts" });
  const liveBox = h("span");
  const chartsPanel = h("section", { class: "panel", "aria-labelledby": "h-charts" });
  const metricsPanel = h("section", { class: "panel", "aria-labelledby": "h-metrics" });
  const paramsPanel = h("section", { class: "panel", "aria-labelledby": "h-params" });
  const tagsPanel = h("section", { class: "panel", "aria-labelledby": "h-tags" });
  const notePanel = h("section", { class: "panel", "aria-labelledby": "h-note" });
  const artPanel = h("section", { class: "panel", "aria-labelledby": "h-artifacts" });
  const reproPanel = h("section", { class: "panel", "aria-labelledby": "h-repro" });

  main.append(
    h("div", { class: "crumbs" },
      h("a", { href: "#/experiments" }, "Experiments"), " / ",
      h("a", { href: hashFor("/runs", { e: [run.experiment_id] }) }, experimentName), " / run"),
    titleBox, facts,
    notePanel,
    chartsPanel,
    h("div", { class: "grid-2", style: { marginTop: "14px" } }, metricsPanel, paramsPanel),
    h("div", { class: "grid-2", style: { marginTop: "14px" } }, tagsPanel, reproPanel),
    artPanel);

  function drawAll() {
    document.title = `${run.name || run.run_id} · runstream`;
    drawTitle();
    drawFacts();
    drawMetrics();
    drawParams();
    drawTags();
    if (!state.editingNote) drawNote();
    drawRepro();
  }

  // ---- title and rename ----
  function drawTitle() {
    if (state.renaming) return;
    clear(titleBox);
    const active = run.lifecycle_stage === "active";
    const h1 = h("h1", { id: "run-name", title: active ? "Click to rename" : null }, run.name || run.run_id);
    if (active) h1.addEventListener("click", startRename);
    titleBox.append(h1, statusBadge(run.status, run.lifecycle_stage), liveBox,
      h("span", { class: "spacer" }),
      active ? h("button", { type: "button", onclick: startRename, id: "rename-run" }, "Rename") : null,
      active
        ? h("button", { type: "button", class: "danger", onclick: () => deleteOrRestore(true) }, "Delete")
        : h("button", { type: "button", onclick: () => deleteOrRestore(false) }, "Restore"));
    clear(liveBox);
    if (run.status === "RUNNING" && active) liveBox.append(h("span", { class: "live-dot", title: "This page updates while the run logs" }, "live"));
  }

  function startRename() {
    state.renaming = true;
    clear(titleBox);
    const input = h("input", { value: run.name || "", "aria-label": "New run name", maxlength: "250", id: "rename-input" });
    const save = async () => {
      const name = input.value.trim();
      if (!name || name === run.name) { cancel(); return; }
      try {
        run = await native.renameRun(run.run_id, name);
        toast("Renamed");
      } catch (e) { toast(e.message, "error"); }
      state.renaming = false;
      drawAll();
      document.getElementById("rename-run")?.focus();
    };
    const cancel = () => { state.renaming = false; drawTitle(); document.getElementById("rename-run")?.focus(); };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); save(); }
      if (e.key === "Escape") { e.preventDefault(); cancel(); }
    });
    titleBox.append(input,
      h("button", { type: "button", class: "primary", onclick: save }, "Save"),
      h("button", { type: "button", onclick: cancel }, "Cancel"));
    input.focus();
    input.select();
  }

  async function deleteOrRestore(del) {
    const done = await modal({
      title: del ? "Delete this run?" : "Restore this run?",
      confirm: del ? "Delete" : "Restore",
      danger: del,
      body: h("div", null,
        h("p", null, del ? "A deleted run is kept for the retention period (30 days by default) and can be restored until then." : "The run becomes active again."),
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "descendants", checked: true }),
          del ? "Also delete descendant runs" : "Also restore descendant runs")),
      onConfirm: async ({ descendants }) => {
        if (del) await native.deleteRuns([run.run_id], descendants);
        else await native.restoreRuns([run.run_id], descendants);
      },
    });
    if (done) { await refresh(); toast(del ? "Run deleted" : "Run restored"); }
  }

  // ---- facts ----
  function fact(label, ...value) {
    return h("div", { class: "fact" }, h("dt", null, label), h("dd", null, ...value));
  }
  function drawFacts() {
    clear(facts);
    const remote = run.git_remote || run.tags["mlflow.source.git.repoURL"] || "";
    const web = /^https?:\/\//.test(remote) ? remote.replace(/\.git$/, "") : null;
    const commit = run.git_commit;
    add(facts,
      fact("Run ID", h("code", { title: run.run_id }, run.run_id.slice(0, 16)), copyButton(run.run_id, "Copy run id")),
      fact("Experiment", h("a", { href: hashFor("/runs", { e: [run.experiment_id] }) }, experimentName)),
      fact("Started", fmtTime(run.start_time)),
      fact("Ended", run.end_time ? fmtTime(run.end_time) : run.status === "RUNNING" ? "still running" : "—"),
      fact("Duration", fmtDuration(run.start_time, run.end_time || (run.status === "RUNNING" ? null : run.start_time))),
      fact("User", run.user_id || "—"),
      fact("Source", h("span", { title: run.source_name || "" }, `${run.source_type || ""} ${run.source_name || "—"}`.trim())),
      fact("Git commit", commit
        ? (web ? h("a", { href: `${web}/commit/${commit}`, rel: "noopener noreferrer", target: "_blank" }, h("code", null, commit.slice(0, 10))) : h("code", { title: commit }, commit.slice(0, 10)))
        : "—", commit ? copyButton(commit, "Copy commit") : null, run.git_dirty ? h("span", { class: "chip", title: "uncommitted changes when the run started" }, "dirty") : null),
      fact("Parent run", run.parent_run_id ? h("a", { href: `#/run/${encodeURIComponent(run.parent_run_id)}` }, h("code", null, run.parent_run_id.slice(0, 12))) : "—"),
      fact("Child runs", h("a", { href: hashFor("/runs", { e: [run.experiment_id], q: `attributes.parent_run_id = '${run.run_id}'`, flat: "1", view: "all" }) }, "show")),
      fact("Logged model", run.has_model ? "yes" : "no"),
      run.lifecycle_stage === "deleted" ? fact("Deleted", fmtTime(run.deleted_time)) : null,
    );
  }

  // ---- metrics ----
  function drawMetrics() {
    clear(metricsPanel);
    const keys = metricKeys();
    metricsPanel.append(h("h2", { id: "h-metrics" }, `Metrics (${keys.length})`));
    if (!keys.length) { metricsPanel.append(h("p", { class: "muted" }, "No metrics logged.")); return; }
    metricsPanel.append(h("div", { style: { overflow: "auto", maxHeight: "420px" } }, h("table", { class: "data", id: "metrics-table" },
      h("thead", null, h("tr", null, ...["Metric", "Latest", "Min", "Max", "Step", "Points"].map((x, i) => h("th", { scope: "col", class: i ? "num" : "" }, x)))),
      h("tbody", null, keys.map((k) => {
        const m = run.metrics[k];
        return h("tr", null,
          h("th", { scope: "row" }, h("button", { type: "button", class: "link", title: "Show its chart", onclick: () => { if (!state.chartKeys.includes(k)) state.chartKeys.push(k); drawChartsPanel(); } }, k)),
          h("td", { class: "num" }, fmtNum(m.latest_value)), h("td", { class: "num" }, fmtNum(m.min_value)),
          h("td", { class: "num" }, fmtNum(m.max_value)), h("td", { class: "num" }, String(m.latest_step)),
          h("td", { class: "num" }, String(m.count)));
      })))));
  }

  // ---- charts ----
  const chartEls = new Map();
  function drawChartsPanel() {
    clear(chartsPanel);
    for (const el of chartEls.values()) purge(el);
    chartEls.clear();
    const keys = metricKeys();
    chartsPanel.append(h("div", { class: "row" },
      h("h2", { id: "h-charts", style: { margin: 0 } }, "Metric history"),
      h("span", { class: "spacer" }),
      h("div", { class: "seg", role: "group", "aria-label": "X axis" },
        ...[["step", "By step"], ["time", "By time"]].map(([v, label]) => h("button", {
          type: "button", "aria-pressed": String(state.x === v), onclick: () => { state.x = v; drawChartsPanel(); },
        }, label)))));
    if (!keys.length) { chartsPanel.append(h("p", { class: "muted" }, "No metrics logged yet.")); return; }
    chartsPanel.append(h("fieldset", { class: "metric-picks", style: { border: "none", padding: 0 } },
      h("legend", { class: "sr-only" }, "Metrics to chart"),
      keys.map((k) => h("label", null, h("input", {
        type: "checkbox", checked: state.chartKeys.includes(k),
        onchange: (e) => {
          state.chartKeys = e.target.checked ? [...state.chartKeys, k] : state.chartKeys.filter((x) => x !== k);
          drawChartsPanel();
        },
      }), k))));
    const shown = state.chartKeys.filter((k) => run.metrics[k]);
    const gridEl = h("div", { class: shown.length > 1 ? "grid-2" : "" });
    chartsPanel.append(gridEl, h("p", { class: "muted small" },
      `Each line is drawn from at most ${CHART_POINTS} buckets computed by the node; the shaded band is each bucket's min–max, so no spike is lost.`));
    shown.forEach((k, i) => {
      const el = h("div", { class: "chart small", "aria-label": `History of ${k}`, dataset: { metric: k, color: PALETTE[i % PALETTE.length] } });
      gridEl.append(h("div", null, el));
      chartEls.set(k, el);
    });
    updateCharts();
  }

  async function updateCharts() {
    await Promise.all([...chartEls].map(async ([k, el]) => {
      try {
        const res = await native.downsampled(run.run_id, k, { points: CHART_POINTS, x: state.x });
        await plot(el, historyTraces(k, res.buckets, el.dataset.color, state.x === "time"), {
          title: { text: k, font: { size: 13 } }, showlegend: false,
          xaxis: { title: { text: state.x === "time" ? "time" : "step" }, type: state.x === "time" ? "date" : "linear" },
        });
      } catch (e) {
        clear(el).append(h("p", { class: "muted" }, `Could not load ${k}: ${e.message}`));
      }
    }));
  }

  // ---- params ----
  function drawParams() {
    clear(paramsPanel);
    const keys = Object.keys(run.params).sort();
    paramsPanel.append(h("h2", { id: "h-params" }, `Params (${keys.length})`));
    if (!keys.length) { paramsPanel.append(h("p", { class: "muted" }, "No params logged.")); return; }
    paramsPanel.append(h("div", { style: { overflow: "auto", maxHeight: "420px" } }, h("table", { class: "kv", id: "params-table" },
      h("tbody", null, keys.map((k) => h("tr", null, h("th", { scope: "row" }, k), h("td", { class: "mono" }, run.params[k])))))));
  }

  // ---- tags ----
  function drawTags() {
    if (tagsPanel.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
    clear(tagsPanel);
    const all = Object.keys(run.tags).sort();
    const user = all.filter((k) => !k.startsWith("mlflow."));
    const system = all.filter((k) => k.startsWith("mlflow."));
    const active = run.lifecycle_stage === "active";
    tagsPanel.append(h("h2", { id: "h-tags" }, `Tags (${user.length})`));
    const tbody = h("tbody");
    for (const k of user) tbody.append(tagRow(k, active));
    if (!user.length) tbody.append(h("tr", null, h("td", { colspan: "3", class: "muted" }, "No tags yet.")));
    tagsPanel.append(h("table", { class: "kv", id: "tags-table" },
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Value"), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
      tbody));
    if (active) {
      const key = h("input", { name: "key", "aria-label": "New tag name", placeholder: "Name", required: true, maxlength: "250", id: "tag-key" });
      const value = h("input", { name: "value", "aria-label": "New tag value", placeholder: "Value", id: "tag-value" });
      tagsPanel.append(h("form", {
        class: "tag-form", onsubmit: async (e) => {
          e.preventDefault();
          try {
            run = await native.setTag(run.run_id, key.value.trim(), value.value);
            toast(`Tag ${key.value.trim()} set`);
            key.value = ""; value.value = "";
            key.blur();
            drawAll();
            document.getElementById("tag-key")?.focus();
          } catch (err) { toast(err.message, "error"); }
        },
      }, key, value, h("button", { type: "submit", class: "primary" }, "Add tag")));
    }
    if (system.length) {
      tagsPanel.append(h("details", { style: { marginTop: "10px" } }, h("summary", null, `System tags (${system.length})`),
        h("table", { class: "kv" }, h("tbody", null, system.map((k) => h("tr", null, h("th", { scope: "row" }, k), h("td", { class: "mono" }, run.tags[k])))))));
    }
  }

  function tagRow(k, active) {
    const tr = h("tr", { dataset: { tag: k } });
    const show = () => {
      clear(tr).append(h("th", { scope: "row" }, k), h("td", null, run.tags[k]),
        h("td", { style: { whiteSpace: "nowrap", width: "1%" } }, active ? [
          h("button", { type: "button", class: "link", "aria-label": `Edit tag ${k}`, onclick: edit }, "Edit"),
          h("button", { type: "button", class: "link", style: { color: "var(--danger)" }, "aria-label": `Delete tag ${k}`, onclick: remove }, "Delete"),
        ] : null));
    };
    const edit = () => {
      const input = h("input", { value: run.tags[k], "aria-label": `Value of tag ${k}`, style: { width: "100%" } });
      const save = async () => {
        try {
          run = await native.setTag(run.run_id, k, input.value);
          toast(`Tag ${k} saved`);
        } catch (e) { toast(e.message, "error"); }
        input.blur();
        drawAll();
      };
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); save(); }
        if (e.key === "Escape") { e.preventDefault(); show(); }
      });
      clear(tr).append(h("th", { scope: "row" }, k), h("td", null, input),
        h("td", { style: { whiteSpace: "nowrap" } },
          h("button", { type: "button", class: "link", onclick: save }, "Save"),
          h("button", { type: "button", class: "link", onclick: show }, "Cancel")));
      input.focus();
    };
    const remove = async () => {
      const ok = await modal({ title: `Delete tag “${k}”?`, confirm: "Delete", danger: true, body: h("p", null, "The tag is removed from this run.") });
      if (!ok) return;
      try {
        run = await native.deleteTag(run.run_id, k);
        toast(`Tag ${k} deleted`);
        drawAll();
      } catch (e) { toast(e.message, "error"); }
    };
    show();
    return tr;
  }

  // ---- note ----
  function drawNote() {
    clear(notePanel);
    const active = run.lifecycle_stage === "active";
    notePanel.append(h("div", { class: "row" }, h("h2", { id: "h-note", style: { margin: 0 } }, "Note"),
      h("span", { class: "spacer" }),
      active ? h("button", { type: "button", id: "edit-note", onclick: editNote }, run.note ? "Edit note" : "Add a note") : null));
    const view = h("div", { class: "note-view", id: "note-view" });
    if (run.note) view.innerHTML = renderMarkdown(run.note); // escaped by renderMarkdown
    else view.append(h("p", { class: "muted" }, "No note. Notes take Markdown."));
    notePanel.append(view);
  }

  function editNote() {
    state.editingNote = true;
    clear(notePanel);
    const area = h("textarea", { rows: "8", id: "note-input", "aria-label": "Note (Markdown)" });
    area.value = run.note || "";
    const preview = h("div", { class: "note-view", "aria-live": "polite" });
    const update = () => { preview.innerHTML = renderMarkdown(area.value); };
    area.addEventListener("input", update);
    update();
    const done = () => { state.editingNote = false; drawNote(); document.getElementById("edit-note")?.focus(); };
    notePanel.append(h("h2", { id: "h-note" }, "Note"),
      h("div", { class: "grid-2" }, area, h("div", null, h("div", { class: "muted small" }, "Preview"), preview)),
      h("div", { class: "row", style: { marginTop: "8px" } },
        h("button", { type: "button", class: "primary", id: "save-note", onclick: async () => {
          try {
            run = await native.setNote(run.run_id, area.value);
            toast("Note saved");
            done();
            drawAll();
          } catch (e) { toast(e.message, "error"); }
        } }, "Save note"),
        h("button", { type: "button", onclick: done }, "Cancel")));
    area.focus();
  }

  // ---- reproduce ----
  function drawRepro() {
    clear(reproPanel);
    reproPanel.append(h("h2", { id: "h-repro" }, "Reproduce"));
    const remote = run.git_remote || run.tags["mlflow.source.git.repoURL"];
    const steps = [];
    if (remote) steps.push(`git clone ${shellQuote(remote)} repo && cd repo`);
    if (run.git_commit) steps.push(`git checkout ${run.git_commit}`);
    steps.push("python -m venv .venv && . .venv/bin/activate");
    if (run.packages.length) steps.push("pip install -r requirements.txt   # the packages below");
    if (run.command_line.length) steps.push(run.command_line.map(shellQuote).join(" "));
    else if (run.source_name) steps.push(`python ${shellQuote(run.source_name)}${run.entry_point ? `  # entry point ${run.entry_point}` : ""}`);
    const script = steps.join("\n");
    const block = (id, text, label) => h("div", { class: "copy-row" }, h("pre", { class: "block", id }, text), copyButton(text, label));
    add(reproPanel,
      run.git_dirty ? h("p", { class: "filter-error" }, "The working tree had uncommitted changes when this run started: the commit alone may not reproduce it.") : null,
      h("h3", null, "Commands"), block("repro-commands", script, "Copy commands"),
      h("p", { class: "small muted" }, `Python ${run.python_version || "version not recorded"}${run.host ? ` · host ${run.host}` : ""}`));
    if (run.packages.length) {
      const req = run.packages.join("\n");
      reproPanel.append(h("details", null, h("summary", null, `Installed packages (${run.packages.length}) — requirements.txt`), block("repro-packages", req, "Copy requirements.txt")));
    } else reproPanel.append(h("p", { class: "small muted" }, "No package list was captured for this run."));
    const params = Object.entries(run.params);
    if (params.length) {
      const text = JSON.stringify(Object.fromEntries(params), null, 2);
      reproPanel.append(h("details", null, h("summary", null, `Params (${params.length}) as JSON`), block("repro-params", text, "Copy params")));
    }
  }

  // ---- artifacts ----
  let currentArtifact = null;
  const artTree = h("ul", { class: "art-tree", role: "tree", "aria-label": "Artifacts" });
  const artPreview = h("div", { class: "art-preview", "aria-live": "polite" });
  function drawArtifacts() {
    clear(artPanel);
    artPanel.append(h("h2", { id: "h-artifacts" }, "Artifacts"));
    if (!run.artifacts.length) { artPanel.append(h("p", { class: "muted" }, "No artifacts logged.")); return; }
    clear(artTree);
    fillTree(artTree, run.artifacts);
    artPanel.append(h("div", { class: "art-layout" }, artTree, artPreview));
    if (!currentArtifact) {
      const first = run.artifacts.find((a) => !a.is_dir && (IMAGE.test(a.path) || TEXT.test(a.path))) || run.artifacts.find((a) => !a.is_dir);
      if (first) showArtifact(first);
      else {
        clear(artPreview).append(h("p", { class: "muted" }, "Pick a file to preview it."));
        // Only folders at the top: open them one level, and preview the first image in them.
        openFolders();
      }
    }
  }

  async function openFolders() {
    const folders = [...artTree.querySelectorAll(":scope > li > button[aria-expanded]")].slice(0, 8);
    await Promise.all(folders.map((b) => b.__open()));
    const files = [...artTree.querySelectorAll("button[data-path]")];
    const pick = files.find((b) => IMAGE.test(b.dataset.path)) || files.find((b) => TEXT.test(b.dataset.path));
    if (pick && !currentArtifact) pick.click();
  }

  function fillTree(ul, entries) {
    for (const a of entries) {
      const name = a.path.split("/").pop();
      if (a.is_dir) {
        const sub = h("ul", { role: "group", hidden: true });
        const btn = h("button", { type: "button", role: "treeitem", "aria-expanded": "false" }, icon("folder"), name);
        const toggle = async (want) => {
          const open = btn.getAttribute("aria-expanded") === "true";
          const next = want === undefined ? !open : want;
          btn.setAttribute("aria-expanded", String(next));
          sub.hidden = !next;
          if (next && !sub.childElementCount) {
            try { fillTree(sub, (await native.artifacts(run.run_id, a.path)).files); } catch (e) { toast(e.message, "error"); }
          }
        };
        btn.__open = () => toggle(true);
        btn.addEventListener("click", () => toggle());
        ul.append(h("li", null, btn, sub));
      } else {
        const btn = h("button", { type: "button", role: "treeitem", title: `${a.path} (${fmtBytes(a.size)})`, dataset: { path: a.path } }, icon(IMAGE.test(name) ? "image" : "file"), name);
        btn.addEventListener("click", () => showArtifact(a));
        ul.append(h("li", null, btn));
      }
    }
  }

  async function showArtifact(a) {
    currentArtifact = a.path;
    for (const b of artTree.querySelectorAll("button[data-path]")) b.setAttribute("aria-current", String(b.dataset.path === a.path));
    const url = artifactUrl(run, a.path);
    clear(artPreview).append(h("div", { class: "row" }, h("strong", null, a.path), h("span", { class: "muted small" }, fmtBytes(a.size)),
      h("span", { class: "spacer" }), h("a", { class: "btn", href: url, download: a.path.split("/").pop(), id: "artifact-download" }, "Download")));
    if (IMAGE.test(a.path)) {
      artPreview.append(h("div", { style: { marginTop: "8px" } }, h("img", { src: url, alt: `Artifact ${a.path}`, id: "artifact-image" })));
    } else if (TEXT.test(a.path)) {
      try {
        const res = await fetch(url, { headers: { Range: `bytes=0-${PREVIEW_BYTES - 1}` } });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        let text = await res.text();
        const cut = (a.size || 0) > PREVIEW_BYTES || text.length > PREVIEW_BYTES;
        if (text.length > PREVIEW_BYTES) text = text.slice(0, PREVIEW_BYTES);
        if (currentArtifact !== a.path) return;
        add(artPreview, h("pre", { id: "artifact-text" }, text), cut ? h("p", { class: "muted small" }, `Showing the first ${fmtBytes(PREVIEW_BYTES)}; download for the whole file.`) : null);
      } catch (e) {
        artPreview.append(h("p", { class: "muted" }, `No preview: ${e.message}`));
      }
    } else {
      artPreview.append(h("p", { class: "muted" }, "No preview for this kind of file."));
    }
  }

  // ---- live updates ----
  async function refresh() {
    const before = JSON.stringify([run.status, run.end_time, Object.values(run.metrics).map((m) => [m.key, m.count, m.latest_step]), run.lifecycle_stage]);
    run = await native.run(run.run_id);
    const after = JSON.stringify([run.status, run.end_time, Object.values(run.metrics).map((m) => [m.key, m.count, m.latest_step]), run.lifecycle_stage]);
    const newKeys = metricKeys().some((k) => !chartEls.has(k)) && state.chartKeys.length < 4;
    if (newKeys && !chartEls.size) state.chartKeys = metricKeys().slice(0, 4);
    drawAll();
    if (before !== after) {
      if (newKeys && chartEls.size < state.chartKeys.length) drawChartsPanel();
      else updateCharts();
    }
    if (JSON.stringify(run.artifacts.map((a) => a.path)) !== artSig) { artSig = JSON.stringify(run.artifacts.map((a) => a.path)); drawArtifacts(); }
  }
  let artSig = JSON.stringify(run.artifacts.map((a) => a.path));

  drawAll();
  drawChartsPanel();
  drawArtifacts();

  let ticks = 0;
  const stop = poller(async () => {
    ticks++;
    // Every 2 s while the run runs; every 20 s otherwise (tags set elsewhere, a restart).
    if (run.status === "RUNNING" || ticks % 10 === 0) await refresh();
  }, 2000);
  return () => { stop(); for (const el of chartEls.values()) purge(el); };
}

