// Compare runs (from one experiment or several): params and metrics side by side with a
// "hide identical rows" switch, parallel coordinates, scatter and contour plots with axis
// pickers, and metric histories overlaid. The node computes the plot data (one request).
import { native } from "../api.js";
import { PALETTE, axisValues, historyTraces, plot, purge } from "../charts.js";
import { add, clear, fmtDuration, fmtNum, fmtTime, h, hashFor, poller, replaceHash, statusBadge, toast } from "../util.js";
import { keyRef } from "./runs.js";

const MAX_PC_AXES = 10;
const MAX_HISTORY_RUNS = 30;

export async function render(main, route) {
  const q = route.query;
  const ids = (q.get("runs") || "").split(",").filter(Boolean);
  document.title = `Compare ${ids.length} runs · runstream`;
  if (ids.length < 2) {
    main.append(h("h1", null, "Compare runs"),
      h("div", { class: "panel empty" }, "Pick two or more runs on a ", h("a", { href: "#/runs" }, "runs page"),
        " (from one experiment or several) and press Compare."));
    return null;
  }
  const st = {
    hide: q.get("hide") === "1",
    sx: q.get("sx") || "", sy: q.get("sy") || "",
    cx: q.get("cx") || "", cy: q.get("cy") || "", cz: q.get("cz") || "",
    pc: q.has("pc") ? q.get("pc").split(",").filter(Boolean) : null,
    color: q.get("color") || "",
    hm: q.get("hm") || "", hx: q.get("hx") === "time" ? "time" : "step",
  };

  let data;
  try {
    data = await native.compare(ids);
  } catch (e) {
    main.append(h("h1", null, "Compare runs"), h("div", { class: "error-box", role: "alert" }, e.message));
    return null;
  }
  let runs = data.runs;
  const color = (i) => PALETTE[i % PALETTE.length];
  const runLabel = (r) => r.name || r.run_id.slice(0, 10);

  // Axis choices: every param and metric of the picked runs (with what differs first).
  const axisOptions = () => {
    const p = data.params.map((r) => ({ ref: keyRef("params", r.key), label: `param ${r.key}`, differs: !r.identical }));
    const m = data.metrics.map((r) => ({ ref: keyRef("metrics", r.key), label: `metric ${r.key}`, differs: !r.identical }));
    return [...p, ...m];
  };
  const options = axisOptions();
  // The pickers also offer each metric's min and max over its whole history (the node keeps
  // them for every run): "the best loss", not only the last one.
  const pickerOptions = [...options, ...data.metrics.flatMap((r) => ["MIN", "MAX"].map((agg) => ({
    ref: `${agg}(${keyRef("metrics", r.key)})`, label: `metric ${r.key} (${agg.toLowerCase()})`, differs: false,
  })))];
  const known = (ref) => pickerOptions.some((o) => o.ref === ref);
  const differing = options.filter((o) => o.differs);
  const pref = (kind) => [...differing, ...options].filter((o) => o.ref.startsWith(kind));
  const params = pref("params.");
  // The main metric: the differing one with the longest history (what a run optimised).
  const steps = (row) => Math.max(0, ...row.steps.filter((x) => x !== null));
  const mainMetric = data.metrics.slice().sort((a, b) => (a.identical - b.identical) || (steps(b) - steps(a)))[0];
  const metricRef = mainMetric ? keyRef("metrics", mainMetric.key) : "";
  const pick = (value, ...fallbacks) => [value, ...fallbacks].find((v) => v && known(v)) || "";
  st.sx = pick(st.sx, params[0]?.ref, options[0]?.ref);
  st.sy = pick(st.sy, metricRef, options[1]?.ref);
  st.cx = pick(st.cx, params[0]?.ref, options[0]?.ref);
  st.cy = pick(st.cy, params.find((o) => o.ref !== st.cx)?.ref, options.find((o) => o.ref !== st.cx && o.ref !== metricRef)?.ref);
  st.cz = pick(st.cz, metricRef);
  if (!st.pc) st.pc = differing.slice(0, MAX_PC_AXES).map((o) => o.ref);
  st.color = pick(st.color, metricRef);
  st.hm = data.metrics.some((m) => m.key === st.hm) ? st.hm : (mainMetric || {}).key || "";

  function syncHash() {
    replaceHash(hashFor("/compare", {
      runs: ids, hide: st.hide ? "1" : "", sx: st.sx, sy: st.sy, cx: st.cx, cy: st.cy, cz: st.cz,
      pc: st.pc, color: st.color, hm: st.hm, hx: st.hx === "time" ? "time" : "",
    }));
  }

  // ---- page ----
  const hideBox = h("input", { type: "checkbox", id: "hide-identical", checked: st.hide, onchange: (e) => { st.hide = e.target.checked; syncHash(); drawTables(); } });
  const runsPanel = h("section", { class: "panel", "aria-labelledby": "h-runs" });
  const paramsPanel = h("section", { class: "panel", "aria-labelledby": "h-cparams" });
  const metricsPanel = h("section", { class: "panel", "aria-labelledby": "h-cmetrics" });
  const pcPanel = h("section", { class: "panel", "aria-labelledby": "h-pc" });
  const scatterPanel = h("section", { class: "panel", "aria-labelledby": "h-scatter" });
  const contourPanel = h("section", { class: "panel", "aria-labelledby": "h-contour" });
  const histPanel = h("section", { class: "panel", "aria-labelledby": "h-hist" });
  const experimentsShown = [...new Set(runs.map((r) => r.experiment_id))];
  main.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/experiments" }, "Experiments"), " / ",
      h("a", { href: hashFor("/runs", { e: experimentsShown }) }, [...new Set(runs.map((r) => r.experiment_name || r.experiment_id))].join(", ")), " / compare"),
    h("div", { class: "page-head" }, h("h1", null, `Comparing ${runs.length} runs`),
      experimentsShown.length > 1 ? h("span", { class: "chip" }, `${experimentsShown.length} experiments`) : null,
      h("span", { class: "grow" }),
      h("label", { class: "row", for: "hide-identical" }, hideBox, "Hide identical rows")),
    runsPanel,
    h("div", { class: "grid-2", style: { marginTop: "14px" } }, paramsPanel, metricsPanel),
    h("div", { style: { marginTop: "14px" } }, pcPanel),
    h("div", { class: "grid-2", style: { marginTop: "14px" } }, scatterPanel, contourPanel),
    h("div", { style: { marginTop: "14px" } }, histPanel));

  const runHeader = (first = "Key") => h("tr", null, h("th", { scope: "col" }, first),
    ...runs.map((r, i) => h("th", { scope: "col", title: r.run_id },
      h("span", { class: "legend-swatch", style: { background: color(i) } }),
      h("a", { href: `#/run/${encodeURIComponent(r.run_id)}` }, runLabel(r)))));

  function drawRuns() {
    clear(runsPanel).append(h("h2", { id: "h-runs" }, "Runs"),
      h("div", { class: "compare-table" }, h("table", { class: "data" },
        h("thead", null, runHeader("Run")),
        h("tbody", null,
          h("tr", null, h("th", { scope: "row" }, "Experiment"), ...runs.map((r) => h("td", null, r.experiment_name || r.experiment_id))),
          h("tr", null, h("th", { scope: "row" }, "Status"), ...runs.map((r) => h("td", null, statusBadge(r.status, r.lifecycle_stage)))),
          h("tr", null, h("th", { scope: "row" }, "Start time"), ...runs.map((r) => h("td", null, fmtTime(r.start_time)))),
          h("tr", null, h("th", { scope: "row" }, "Duration"), ...runs.map((r) => h("td", null, fmtDuration(r.start_time, r.end_time || (r.status === "RUNNING" ? null : r.start_time))))),
          h("tr", null, h("th", { scope: "row" }, "User"), ...runs.map((r) => h("td", null, r.user_id || "—")))))));
  }

  function kvTable(rows, id, fmt) {
    const shown = st.hide ? rows.filter((r) => !r.identical) : rows;
    if (!rows.length) return h("p", { class: "muted" }, "None logged.");
    if (!shown.length) return h("p", { class: "muted" }, `All ${rows.length} rows are identical across these runs.`);
    return h("div", { class: "compare-table" }, h("table", { class: "data", id },
      h("thead", null, runHeader()),
      h("tbody", null, shown.map((row) => h("tr", { class: row.identical ? "" : "diff", dataset: { key: row.key } },
        h("th", { scope: "row" }, row.key, row.identical ? null : h("span", { class: "sr-only" }, " (differs)")),
        ...row.values.map((v, i) => h("td", { class: typeof v === "number" ? "num" : "", title: fmt.title ? fmt.title(row, i) : null }, fmt.value(v))))))));
  }

  function drawTables() {
    const diffP = data.params.filter((r) => !r.identical).length;
    const diffM = data.metrics.filter((r) => !r.identical).length;
    clear(paramsPanel).append(h("h2", { id: "h-cparams" }, `Params (${diffP} of ${data.params.length} differ)`),
      kvTable(data.params, "compare-params", { value: (v) => (v === null ? "—" : v) }));
    clear(metricsPanel).append(h("h2", { id: "h-cmetrics" }, `Metrics, latest value (${diffM} of ${data.metrics.length} differ)`),
      kvTable(data.metrics, "compare-metrics", {
        value: (v) => (v === null ? "—" : fmtNum(v)),
        title: (row, i) => (row.values[i] === null ? null : `min ${fmtNum(row.min[i])} · max ${fmtNum(row.max[i])} · step ${row.steps[i]}`),
      }));
  }

  // ---- plots ----
  const pcEl = h("div", { class: "chart", id: "plot-parallel", "aria-label": "Parallel coordinates plot" });
  const scEl = h("div", { class: "chart", id: "plot-scatter", "aria-label": "Scatter plot" });
  const coEl = h("div", { class: "chart", id: "plot-contour", "aria-label": "Contour plot" });
  const hiEl = h("div", { class: "chart", id: "plot-history", "aria-label": "Metric histories" });

  const select = (id, label, value, onchange, { allowNone = false } = {}) => {
    const sel = h("select", { id, onchange: (e) => onchange(e.target.value) },
      allowNone ? h("option", { value: "" }, "—") : null,
      pickerOptions.map((o) => h("option", { value: o.ref }, o.label)));
    sel.value = value;
    return h("label", { for: id }, label, sel);
  };

  function drawPcPanel() {
    const picks = h("fieldset", { class: "pc-keys", style: { border: "none", padding: 0 } },
      h("legend", { class: "sr-only" }, "Axes of the parallel-coordinates plot"),
      options.map((o) => h("label", null, h("input", {
        type: "checkbox", checked: st.pc.includes(o.ref),
        onchange: (e) => {
          st.pc = e.target.checked ? [...st.pc, o.ref] : st.pc.filter((x) => x !== o.ref);
          syncHash(); updatePlots();
        },
      }), o.label)));
    clear(pcPanel).append(h("h2", { id: "h-pc" }, "Parallel coordinates"),
      h("div", { class: "axis-pick" }, select("pc-color", "Colour by ", st.color, (v) => { st.color = v; syncHash(); updatePlots(); })),
      picks, pcEl);
    clear(scatterPanel).append(h("h2", { id: "h-scatter" }, "Scatter"),
      h("div", { class: "axis-pick" },
        select("scatter-x", "X ", st.sx, (v) => { st.sx = v; syncHash(); updatePlots(); }),
        select("scatter-y", "Y ", st.sy, (v) => { st.sy = v; syncHash(); updatePlots(); })),
      scEl);
    clear(contourPanel).append(h("h2", { id: "h-contour" }, "Contour"),
      h("div", { class: "axis-pick" },
        select("contour-x", "X ", st.cx, (v) => { st.cx = v; syncHash(); updatePlots(); }),
        select("contour-y", "Y ", st.cy, (v) => { st.cy = v; syncHash(); updatePlots(); }),
        select("contour-z", "Colour ", st.cz, (v) => { st.cz = v; syncHash(); updatePlots(); })),
      coEl);
  }

  let plotGen = 0;
  async function updatePlots() {
    const gen = ++plotGen;
    let res, res2;
    try {
      // Two questions to the node: parallel axes with the scatter's x/y, and the contour's x/y/z.
      const axes = [...new Set([...st.pc, ...(st.color ? [st.color] : [])])];
      const both = st.sx && st.sy;
      const all3 = st.cx && st.cy && st.cz;
      [res, res2] = await Promise.all([
        native.compare(ids, { plot_keys: axes, x: both ? st.sx : null, y: both ? st.sy : null }),
        all3 ? native.compare(ids, { plot_keys: [], param_keys: [], metric_keys: [], x: st.cx, y: st.cy, z: st.cz }) : null,
      ]);
    } catch (e) {
      toast(`Plots: ${e.message}`, "error");
      return;
    }
    if (gen !== plotGen) return;
    const dims = res.plots.parallel_coordinates.dimensions;
    const colorDim = dims.find((d) => d.key === st.color);
    const pcDims = dims.filter((d) => st.pc.includes(d.key)).map((d) => {
      const a = axisValues(d);
      return { label: d.key.replace(/^(params|metrics)\./, ""), values: a.values.map((v) => (v === null ? NaN : v)), ...(a.ticks || {}) };
    });
    if (pcDims.length) {
      const cv = colorDim ? axisValues(colorDim).values : runs.map((_, i) => i);
      await plot(pcEl, [{
        type: "parcoords", dimensions: pcDims,
        line: { color: cv.map((v) => (v === null ? NaN : v)), colorscale: "Viridis", showscale: true, colorbar: { title: { text: (st.color || "").replace(/^(params|metrics)\./, "") } } },
      }], { margin: { l: 60, r: 60, t: 60, b: 30 }, hovermode: false });
    } else { purge(pcEl); clear(pcEl).append(h("p", { class: "muted empty" }, "Pick axes above.")); }

    const sc = res.plots.scatter;
    if (sc) {
      const xv = axisValues(sc.x), yv = axisValues(sc.y);
      await plot(scEl, [{
        type: "scatter", mode: "markers", x: xv.values, y: yv.values,
        text: runs.map(runLabel), marker: { size: 11, color: runs.map((_, i) => color(i)), line: { width: 1, color: "#fff" } },
        hovertemplate: "%{text}<br>x %{x}<br>y %{y}<extra></extra>",
      }], { xaxis: { title: { text: sc.x.key }, ...(xv.ticks || {}) }, yaxis: { title: { text: sc.y.key }, ...(yv.ticks || {}) }, hovermode: "closest", showlegend: false });
    } else { purge(scEl); clear(scEl).append(h("p", { class: "muted empty" }, "Pick the x and y axes.")); }

    const co = res2 && res2.plots.contour;
    if (co) {
      const xv = axisValues(co.x), yv = axisValues(co.y), zv = axisValues(co.z);
      const pts = xv.values.map((x, i) => [x, yv.values[i], zv.values[i]]).filter((p) => p.every((v) => v !== null && Number.isFinite(v)));
      const xs = new Set(pts.map((p) => p[0])), ys = new Set(pts.map((p) => p[1]));
      if (pts.length >= 3 && xs.size >= 2 && ys.size >= 2) {
        await plot(coEl, [
          { type: "contour", x: pts.map((p) => p[0]), y: pts.map((p) => p[1]), z: pts.map((p) => p[2]), colorscale: "Viridis", connectgaps: true, colorbar: { title: { text: co.z.key.replace(/^(params|metrics)\./, "") } }, contours: { coloring: "heatmap" } },
          { type: "scatter", mode: "markers", x: pts.map((p) => p[0]), y: pts.map((p) => p[1]), marker: { color: "#fff", size: 7, line: { color: "#1c2330", width: 1 } }, hoverinfo: "skip", showlegend: false },
        ], { xaxis: { title: { text: co.x.key }, ...(xv.ticks || {}) }, yaxis: { title: { text: co.y.key }, ...(yv.ticks || {}) }, hovermode: "closest" });
      } else {
        purge(coEl);
        clear(coEl).append(h("p", { class: "muted empty" }, "A contour needs at least three runs with all three values and two distinct values on each axis."));
      }
    } else { purge(coEl); clear(coEl).append(h("p", { class: "muted empty" }, "Pick x, y and colour.")); }
  }

  // ---- metric histories overlaid ----
  function drawHistPanel() {
    const sel = h("select", { id: "history-metric", onchange: (e) => { st.hm = e.target.value; syncHash(); updateHistory(); } },
      data.metrics.map((m) => h("option", { value: m.key }, m.key)));
    sel.value = st.hm;
    add(clear(histPanel), h("div", { class: "row" }, h("h2", { id: "h-hist", style: { margin: 0 } }, "Metric history"),
      h("span", { class: "spacer" }),
      h("label", { for: "history-metric" }, "Metric ", sel),
      h("div", { class: "seg", role: "group", "aria-label": "X axis" },
        ...[["step", "By step"], ["time", "By time"]].map(([v, label]) => h("button", {
          type: "button", "aria-pressed": String(st.hx === v),
          onclick: (e) => { st.hx = v; for (const b of e.target.parentNode.children) b.setAttribute("aria-pressed", String(b === e.target)); syncHash(); updateHistory(); },
        }, label)))),
      runs.length > MAX_HISTORY_RUNS ? h("p", { class: "muted small" }, `Showing the first ${MAX_HISTORY_RUNS} runs.`) : null,
      hiEl);
  }

  async function updateHistory() {
    if (!st.hm) { clear(hiEl).append(h("p", { class: "muted empty" }, "No metrics logged.")); return; }
    const shown = runs.slice(0, MAX_HISTORY_RUNS);
    const series = await Promise.all(shown.map((r) => native.downsampled(r.run_id, st.hm, { points: 300, x: st.hx }).catch(() => null)));
    const traces = [];
    series.forEach((s, i) => { if (s && s.buckets.length) traces.push(...historyTraces(runLabel(shown[i]), s.buckets, color(i), st.hx === "time")); });
    await plot(hiEl, traces, { xaxis: { title: { text: st.hx }, type: st.hx === "time" ? "date" : "linear" }, yaxis: { title: { text: st.hm } }, hovermode: "closest", showlegend: true });
  }

  drawRuns();
  drawTables();
  drawPcPanel();
  drawHistPanel();
  syncHash();
  await Promise.all([updatePlots(), updateHistory()]);

  // Running runs: refresh tables, plots and histories while they log.
  const stop = poller(async () => {
    if (!data.runs.some((r) => r.status === "RUNNING")) return;
    data = await native.compare(ids);
    runs = data.runs;
    drawRuns();
    drawTables();
    await Promise.all([updatePlots(), updateHistory()]);
  }, 4000);
  return () => { stop(); [pcEl, scEl, coEl, hiEl].forEach(purge); };
}
