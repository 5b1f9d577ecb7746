// Every call the pages make to the node, in one place. Reads of the runs table, the key
// catalog, experiments with counts and artifact files come from /api/v1/ui (ui_support.py);
// everything else is the native API (/api/v1, native.py).

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.detail)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    // Where a filter failed: the API sends `position`; older messages only name it in text.
    let pos = this.body.details ? this.body.details.position : this.body.position;
    if (pos === undefined || pos === null) {
      const m = /at position (\d+)/.exec(this.message);
      pos = m ? Number(m[1]) : null;
    }
    this.position = pos;
  }
}

async function request(method, url, body, { signal } = {}) {
  if (method !== "GET") cache.clear(); // a write may change names and keys
  const init = { method, headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text.slice(0, 500) }; }
  }
  if (!res.ok) {
    if (data && typeof data.detail === "string") data.message = data.detail;
    else if (data && Array.isArray(data.detail)) data.message = data.detail.map((d) => d.msg).join("; ");
    throw new ApiError(res.status, data);
  }
  return data;
}

function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

const enc = encodeURIComponent;

// Reads that change slowly (key catalog, experiment names), kept a few seconds: a re-sort or
// a new filter re-renders the runs page, and should cost only the runs query.
const CACHE_MS = 10_000;
const cache = new Map();
function cached(url) {
  const hit = cache.get(url);
  if (hit && Date.now() - hit.at < CACHE_MS) return hit.promise;
  const promise = request("GET", url);
  cache.set(url, { at: Date.now(), promise });
  promise.catch(() => cache.delete(url));
  return promise;
}
export function forget() { cache.clear(); }

// The search a runs page shows: the same object is sent to the table, select-all and CSV.
export function searchParams(s) {
  return {
    experiment_ids: s.experiments,
    filter: s.filter || undefined,
    view: s.view || "active",
    has_model: s.model === "with" ? true : s.model === "without" ? false : undefined,
    order_by: s.order ? [s.order] : undefined,
  };
}

// ---- /api/v1/ui (ui_support.py) ----

export const ui = {
  runs: (s, { offset, limit, params, metrics, nested, withTotal, autoParams, autoMetrics }, opts) =>
    request("GET", `/api/v1/ui/runs${qs({
      ...searchParams(s), offset, limit, params, metrics, nested, with_total: withTotal,
      auto_params: autoParams || undefined, auto_metrics: autoMetrics || undefined,
    })}`, undefined, opts),
  subtree: (s, runId, { params, metrics }, opts) =>
    request("GET", `/api/v1/ui/runs/${enc(runId)}/subtree${qs({ ...searchParams(s), params, metrics })}`, undefined, opts),
  runIds: (s) => request("GET", `/api/v1/ui/run-ids${qs(searchParams(s))}`),
  keys: (experiments) => cached(`/api/v1/ui/keys${qs({ experiment_ids: experiments })}`),
  experiments: (view = "active", { fresh = false } = {}) =>
    (fresh ? request("GET", `/api/v1/ui/experiments${qs({ view })}`) : cached(`/api/v1/ui/experiments${qs({ view })}`)),
  // CSV of chosen runs: a form post (thousands of ids do not fit in a URL).
  csvOfRuns: "/api/v1/ui/runs.csv",
  createExperiment: (name) => request("POST", `/api/v1/ui/experiments`, { name }),
  renameExperiment: (id, name) => request("POST", `/api/v1/ui/experiments/${enc(id)}/rename`, { name }),
  deleteExperiment: (id) => request("POST", `/api/v1/ui/experiments/${enc(id)}/delete`),
  restoreExperiment: (id) => request("POST", `/api/v1/ui/experiments/${enc(id)}/restore`),
};

// ---- native API (/api/v1, native.py) ----

export const native = {
  run: (runId, opts) => request("GET", `/api/v1/runs/${enc(runId)}`, undefined, opts),
  experiment: (id) => request("GET", `/api/v1/experiments/${enc(id)}`),
  artifacts: (runId, path) => request("GET", `/api/v1/runs/${enc(runId)}/artifacts${qs({ path })}`),
  downsampled: (runId, key, { points = 500, x = "step" } = {}, opts) =>
    request("GET", `/api/v1/runs/${enc(runId)}/metric-history/downsampled${qs({ key, points, x })}`, undefined, opts),
  renameRun: (runId, name) => request("POST", `/api/v1/runs/${enc(runId)}/rename`, { name }),
  setTag: (runId, key, value) => request("POST", `/api/v1/runs/${enc(runId)}/tags`, { key, value }),
  deleteTag: (runId, key) => request("POST", `/api/v1/runs/${enc(runId)}/tags/delete`, { key }),
  setNote: (runId, content) => request("PUT", `/api/v1/runs/${enc(runId)}/note`, { content }),
  deleteRuns: (runIds, withDescendants) =>
    request("POST", `/api/v1/runs/delete`, { run_ids: runIds, with_descendants: withDescendants }),
  restoreRuns: (runIds, withDescendants) =>
    request("POST", `/api/v1/runs/restore`, { run_ids: runIds, with_descendants: withDescendants }),
  compare: (runIds, opts = {}) => request("POST", `/api/v1/runs/compare`, { run_ids: runIds, ...opts }),
  // Every run matching a search, streamed by the node.
  csvUrl: (s) => `/api/v1/runs.csv${qs(searchParams(s))}`,
};

// A file of a run's artifacts, through the node's artifact proxy (MLflow's layout).
export function artifactUrl(run, path) {
  const rel = path.split("/").map(enc).join("/");
  return `/api/2.0/mlflow-artifacts/artifacts/${enc(run.experiment_id)}/${enc(run.run_id)}/artifacts/${rel}`;
}
