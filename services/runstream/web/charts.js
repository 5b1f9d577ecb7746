// Charts with plotly.js, loaded on first use from this node (the installed `plotly` Python
// package's bundle), so the runs table never waits for its 4.8 MB.

let loading = null;

export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const url = document.querySelector('meta[name="plotly-url"]').content;
      const s = document.createElement("script");
      s.src = url;
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => { loading = null; reject(new Error("plotly.js could not be loaded from the node")); };
      document.head.appendChild(s);
    });
  }
  return loading;
}

export const PALETTE = ["#2456c9", "#d9480f", "#2b8a3e", "#ae3ec9", "#1098ad", "#e67700", "#c2255c",
  "#5c940d", "#364fc7", "#862e9c", "#0b7285", "#a61e4d"];

const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"] };

const LAYOUT = {
  margin: { l: 56, r: 16, t: 28, b: 44 },
  paper_bgcolor: "#ffffff",
  plot_bgcolor: "#ffffff",
  font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1c2330" },
  xaxis: { gridcolor: "#eef1f5", zerolinecolor: "#dde2ea", automargin: true },
  yaxis: { gridcolor: "#eef1f5", zerolinecolor: "#dde2ea", automargin: true },
  legend: { orientation: "h", y: -0.2 },
  hovermode: "x unified",
};

export async function plot(el, traces, layout = {}) {
  const Plotly = await loadPlotly();
  const full = { ...LAYOUT, ...layout, xaxis: { ...LAYOUT.xaxis, ...(layout.xaxis || {}) }, yaxis: { ...LAYOUT.yaxis, ...(layout.yaxis || {}) } };
  if (el.dataset.plotted) await Plotly.react(el, traces, full, CONFIG);
  else {
    await Plotly.newPlot(el, traces, full, CONFIG);
    el.dataset.plotted = "1";
  }
  el.setAttribute("role", "img");
  return el;
}

export function purge(el) {
  if (window.Plotly && el && el.dataset.plotted) { window.Plotly.purge(el); delete el.dataset.plotted; }
}

const num = (v) => (v === null || v === undefined || typeof v === "string" ? null : v);

// Traces for one downsampled metric history: the min..max band of each bucket (so a spike
// between drawn points stays visible) and the line through each bucket's last value.
export function historyTraces(label, buckets, color, xIsTime) {
  const xs = buckets.map((b) => (xIsTime ? new Date(b.x_end) : b.x_end));
  const line = {
    type: "scatter", mode: buckets.length > 60 ? "lines" : "lines+markers", name: label,
    x: xs, y: buckets.map((b) => num(b.last)), line: { color, width: 2 }, marker: { size: 5 },
    hovertemplate: `${label}: %{y}<extra></extra>`,
  };
  const reduced = buckets.some((b) => b.count > 1);
  if (!reduced) return [line];
  const band = {
    type: "scatter", mode: "lines", name: `${label} min–max`, showlegend: false, hoverinfo: "skip",
    x: [...xs, ...xs.slice().reverse()],
    y: [...buckets.map((b) => num(b.max) ?? num(b.last)), ...buckets.map((b) => num(b.min) ?? num(b.last)).reverse()],
    fill: "toself", fillcolor: color + "22", line: { width: 0 },
  };
  return [band, line];
}

// A plot axis from the compare API: numeric values, or categories mapped to 0..n-1.
export function axisValues(dim) {
  if (!dim) return { values: [], ticks: null };
  if (dim.type === "numeric") return { values: dim.values.map(num), ticks: null };
  const cats = [...new Set(dim.values.filter((v) => v !== null && v !== undefined))].sort();
  return {
    values: dim.values.map((v) => (v === null || v === undefined ? null : cats.indexOf(v))),
    ticks: { tickvals: cats.map((_, i) => i), ticktext: cats },
  };
}
