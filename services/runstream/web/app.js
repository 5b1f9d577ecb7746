// The page shell: hash routes (#/experiments, #/runs?..., #/run/<id>, #/compare?runs=...),
// one page module per route, loaded on first use. Each page's render returns a cleanup
// function that stops its polling when the route changes.
import { clear, h, parseHash, poller } from "./util.js";

const routes = {
  experiments: () => import("./pages/experiments.js"),
  runs: () => import("./pages/runs.js"),
  run: () => import("./pages/run.js"),
  compare: () => import("./pages/compare.js"),
};

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;

async function route() {
  const r = parseHash();
  const name = routes[r.parts[0]] ? r.parts[0] : "experiments";
  const gen = ++generation;
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup must not block the next */ } }
  cleanup = null;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === (name === "run" ? "runs" : name)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  let mod;
  try {
    mod = await routes[name]();
  } catch (e) {
    clear(main).appendChild(h("div", { class: "error-box", role: "alert" }, `Could not load the page: ${e.message}`));
    return;
  }
  if (gen !== generation) return;
  clear(main);
  main.dataset.page = name;
  try {
    cleanup = (await mod.render(main, r)) || null;
  } catch (e) {
    console.error(e);
    clear(main).appendChild(h("div", { class: "error-box", role: "alert" }, e.message || String(e)));
  }
  // Screen readers: announce the new page by moving focus to its heading.
  const heading = main.querySelector("h1");
  if (heading && document.activeElement === document.body) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

// A page may re-render itself for a new hash it set (e.g. a search): it sets this flag.
window.addEventListener("hashchange", () => {
  if (window.__rsSkipRoute) { window.__rsSkipRoute = false; return; }
  route();
});
route();

// The node's health in the top bar: projector lag and degraded state.
const status = document.getElementById("node-status");
async function health() {
  try {
    const res = await fetch("/health");
    const body = await res.json();
    const lag = (body.lag && body.lag.total) || 0;
    status.textContent = body.status !== "ok" ? "node degraded" : lag > 1000 ? `catching up (${lag} events behind)` : "";
  } catch {
    status.textContent = "node unreachable";
  }
}
health();
poller(health, 15000);
