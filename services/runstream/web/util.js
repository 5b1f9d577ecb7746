// Small DOM and formatting helpers. Text always goes in as text nodes (never innerHTML),
// so a run name, tag or param can never inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "value") el.value = v;
      else if (k === "checked") el.checked = !!v;
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

// el.append(...) for children that may be null/false/arrays (skipped, flattened), like h().
export function add(el, ...children) {
  append(el, children);
  return el;
}

const ICONS = {
  folder: "M1.5 3.5h4l1.5 1.5h7.5v8h-13z",
  file: "M3.5 1.5h6l3 3v10h-9z M9.5 1.5v3h3",
  image: "M2 2.5h12v11H2z M2 11l3.5-3.5 3 3 2-2L14 12 M10.5 6a1 1 0 1 0 0.01 0",
  copy: "M5.5 5.5h8v8h-8z M2.5 10.5v-8h8",
};

// A small line icon (inline SVG: no font or network needed), hidden from screen readers.
export function icon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("width", "14");
  svg.setAttribute("height", "14");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.3");
  path.setAttribute("stroke-linejoin", "round");
  svg.appendChild(path);
  return svg;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ---- formatting ----

const dtf = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return dtf.format(new Date(ms));
}

// Compact, sortable-looking time for table cells: the year only when it is not this one.
const pad = (n) => String(n).padStart(2, "0");
export function fmtShort(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${d.getFullYear() === new Date().getFullYear() ? day.slice(5) : day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(ms) {
  if (!ms) return "—";
  const s = (Date.now() - ms) / 1000;
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 30) return `${Math.floor(s / 86400)} d ago`;
  return fmtTime(ms);
}

export function fmtDuration(start, end) {
  if (!start) return "—";
  const ms = (end || Date.now()) - start;
  if (ms < 0) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d}d ${hh}h ${mm}m`;
  if (hh) return `${hh}h ${mm}m ${ss}s`;
  if (mm) return `${mm}m ${ss}s`;
  return `${(ms / 1000).toFixed(1)}s`;
}

export function fmtNum(v) {
  if (v === null || v === undefined || v === "") return "";
  if (typeof v === "string") return v; // "NaN", "Infinity"
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e7)) return v.toExponential(4);
  return String(Number(v.toPrecision(6)));
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  const u = ["KB", "MB", "GB", "TB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(n < 10 ? 1 : 0)} ${u[i]}`;
}

export function statusBadge(status, stage) {
  if (stage === "deleted") return h("span", { class: "badge st-deleted" }, "Deleted");
  const label = status ? status[0] + status.slice(1).toLowerCase() : "—";
  return h("span", { class: `badge st-${status}` }, label);
}

// ---- hash routes: #/path?query ----

export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/experiments";
  const [path, query = ""] = raw.split("?");
  return { path, parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

export function hashFor(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && !v.length)) continue;
    q.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  const s = q.toString();
  return `#${path}${s ? "?" + s : ""}`;
}

// Change the hash without re-rendering the page (the page already shows that state).
export function replaceHash(hash) {
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

// ---- feedback ----

export function toast(message, kind = "info", ms = 4000) {
  const box = document.getElementById("toasts");
  const t = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.appendChild(t);
  setTimeout(() => t.remove(), ms);
}

export function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// A modal dialog built on <dialog>: focus moves in, Escape cancels, focus returns after.
// `body` is a node or a function (dialogEl) => node; resolves to the form's values or null.
export function modal({ title, body, confirm = "OK", danger = false, onConfirm }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const err = h("div", { class: "dialog-error", role: "alert" });
    const ok = h("button", { type: "submit", class: danger ? "danger solid" : "primary", value: "ok" }, confirm);
    const cancel = h("button", { type: "button", value: "cancel" }, "Cancel");
    const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
    const form = h("form", { method: "dialog" },
      h("h2", { id: titleId }, title),
      typeof body === "function" ? body() : body,
      err,
      h("div", { class: "actions" }, cancel, ok));
    const dlg = h("dialog", { "aria-labelledby": titleId }, form);
    document.body.appendChild(dlg);
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      dlg.close();
      dlg.remove();
      if (opener && opener.focus) opener.focus();
      resolve(value);
    };
    cancel.addEventListener("click", () => finish(null));
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); finish(null); });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const values = Object.fromEntries([...form.elements].filter((x) => x.name).map(
        (x) => [x.name, x.type === "checkbox" ? x.checked : x.value]));
      if (onConfirm) {
        ok.disabled = true;
        err.textContent = "";
        try {
          await onConfirm(values);
        } catch (ex) {
          err.textContent = ex.message || String(ex);
          ok.disabled = false;
          return;
        }
      }
      finish(values);
    });
    dlg.showModal();
    const first = form.querySelector("input, select, textarea");
    (first || ok).focus();
  });
}

// Poll `fn` every `ms` while the page is visible, until the returned stop() is called.
export function poller(fn, ms) {
  let timer = null, stopped = false, busy = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden && !busy) {
      busy = true;
      try { await fn(); } catch (e) { /* a missed tick is retried at the next */ } finally { busy = false; }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}

export function copyButton(text, label = "Copy") {
  const b = h("button", { type: "button", class: "icon", title: label, "aria-label": label }, icon("copy"));
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(typeof text === "function" ? text() : text);
      toast("Copied");
    } catch {
      toast("The browser refused the clipboard", "error");
    }
  });
  return b;
}

export function downloadUrl(url) {
  const a = h("a", { href: url, download: "" });
  document.body.appendChild(a);
  a.click();
  a.remove();
}
