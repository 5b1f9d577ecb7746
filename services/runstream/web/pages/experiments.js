// Experiments: list, create, rename, delete / restore; pick several and open their runs together.
import { ui } from "../api.js";
import { clear, fmtAgo, fmtTime, h, hashFor, modal, poller, replaceHash, toast } from "../util.js";

export async function render(main, route) {
  document.title = "Experiments · runstream";
  let view = route.query.get("view") || "active";
  let items = [];
  let quick = "";
  const selected = new Set();

  const openBtn = h("button", { type: "button", class: "primary", disabled: true }, "Open runs");
  const tbody = h("tbody");
  const summary = h("span", { class: "muted small", role: "status", "aria-live": "polite" });
  const viewSeg = h("div", { class: "seg", role: "group", "aria-label": "Experiment state" },
    ...[["active", "Active"], ["deleted", "Deleted"], ["all", "All"]].map(([v, label]) =>
      h("button", { type: "button", "aria-pressed": String(v === view), dataset: { v }, onclick: () => setView(v) }, label)));
  const quickInput = h("input", {
    type: "search", placeholder: "Filter by name", "aria-label": "Filter experiments by name",
    oninput: (e) => { quick = e.target.value.toLowerCase(); draw(); },
  });
  const allBox = h("input", { type: "checkbox", "aria-label": "Select all experiments shown", onchange: (e) => {
    for (const x of shown()) { if (e.target.checked) selected.add(x.experiment_id); else selected.delete(x.experiment_id); }
    draw();
  } });

  main.append(
    h("div", { class: "page-head" },
      h("h1", null, "Experiments"),
      h("span", { class: "grow" }),
      quickInput, viewSeg,
      h("button", { type: "button", onclick: create }, "New experiment"),
      openBtn),
    h("div", { class: "panel", style: { padding: "0" } },
      h("table", { class: "exp-list" },
        h("caption", { class: "sr-only" }, "Experiments"),
        h("thead", null, h("tr", null,
          h("th", { scope: "col", style: { width: "36px" } }, allBox),
          h("th", { scope: "col" }, "Name"),
          h("th", { scope: "col" }, "ID"),
          h("th", { scope: "col", class: "num" }, "Runs"),
          h("th", { scope: "col", class: "num" }, "Deleted runs"),
          h("th", { scope: "col" }, "Last run"),
          h("th", { scope: "col" }, "Created"),
          h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Actions")))),
        tbody)),
    h("p", null, summary));

  openBtn.addEventListener("click", () => {
    location.hash = hashFor("/runs", { e: [...selected] });
  });

  function setView(v) {
    view = v;
    for (const b of viewSeg.children) b.setAttribute("aria-pressed", String(b.dataset.v === v));
    replaceHash(hashFor("/experiments", { view: v === "active" ? "" : v }));
    load();
  }

  function shown() {
    return items.filter((x) => !quick || x.name.toLowerCase().includes(quick) || x.experiment_id.includes(quick));
  }

  function draw() {
    clear(tbody);
    const list = shown();
    for (const x of list) {
      const deleted = x.lifecycle_stage === "deleted";
      const box = h("input", {
        type: "checkbox", checked: selected.has(x.experiment_id), "aria-label": `Select experiment ${x.name}`,
        onchange: (e) => { if (e.target.checked) selected.add(x.experiment_id); else selected.delete(x.experiment_id); updateOpen(); },
      });
      tbody.append(h("tr", { class: deleted ? "deleted" : "" },
        h("td", null, box),
        h("td", null,
          h("a", { class: "name-link", href: hashFor("/runs", { e: [x.experiment_id], view: deleted ? "deleted" : "" }) }, x.name),
          deleted ? h("span", { class: "badge st-deleted", style: { marginLeft: "8px" } }, "Deleted") : null),
        h("td", null, h("code", null, x.experiment_id)),
        h("td", { class: "num" }, String(x.active_runs)),
        h("td", { class: "num" }, String(x.deleted_runs)),
        h("td", { title: fmtTime(x.last_run_start) }, fmtAgo(x.last_run_start)),
        h("td", null, x.creation_time ? fmtTime(x.creation_time) : "—"),
        h("td", { style: { textAlign: "right", whiteSpace: "nowrap" } },
          deleted ? h("button", { type: "button", onclick: () => restore(x) }, "Restore") : [
            h("button", { type: "button", class: "link", onclick: () => rename(x), "aria-label": `Rename ${x.name}` }, "Rename"),
            x.experiment_id === "0" ? null :
              h("button", { type: "button", class: "link", style: { color: "var(--danger)" }, onclick: () => remove(x), "aria-label": `Delete ${x.name}` }, "Delete"),
          ])));
    }
    if (!list.length) tbody.append(h("tr", null, h("td", { colspan: "8", class: "empty" }, items.length ? "No experiment matches." : "No experiments yet.")));
    allBox.checked = list.length > 0 && list.every((x) => selected.has(x.experiment_id));
    allBox.indeterminate = !allBox.checked && list.some((x) => selected.has(x.experiment_id));
    updateOpen();
    const runs = items.reduce((a, x) => a + x.active_runs, 0);
    summary.textContent = `${items.length} experiment${items.length === 1 ? "" : "s"}, ${runs} active run${runs === 1 ? "" : "s"}`;
  }

  function updateOpen() {
    const n = selected.size;
    openBtn.disabled = n === 0;
    openBtn.textContent = n > 1 ? `Open runs of ${n} experiments` : "Open runs";
  }

  async function load() {
    try {
      items = (await ui.experiments(view, { fresh: true })).experiments;
      const known = new Set(items.map((x) => x.experiment_id));
      for (const id of [...selected]) if (!known.has(id)) selected.delete(id);
      draw();
    } catch (e) {
      toast(`Could not load experiments: ${e.message}`, "error");
    }
  }

  async function create() {
    await modal({
      title: "New experiment",
      confirm: "Create",
      body: h("div", { class: "field" }, h("label", { for: "exp-name" }, "Name"),
        h("input", { id: "exp-name", name: "name", required: true, maxlength: "500", autocomplete: "off" })),
      onConfirm: async ({ name }) => {
        const res = await ui.createExperiment(name.trim());
        toast(`Created experiment ${name}`);
        await load();
        return res;
      },
    });
  }

  async function rename(x) {
    await modal({
      title: `Rename experiment`,
      confirm: "Rename",
      body: h("div", { class: "field" }, h("label", { for: "exp-new-name" }, "New name"),
        h("input", { id: "exp-new-name", name: "name", required: true, value: x.name, maxlength: "500", autocomplete: "off" })),
      onConfirm: async ({ name }) => { await ui.renameExperiment(x.experiment_id, name.trim()); await load(); },
    });
  }

  async function remove(x) {
    await modal({
      title: `Delete experiment “${x.name}”?`,
      confirm: "Delete",
      danger: true,
      body: h("p", null, `Its ${x.active_runs} active run${x.active_runs === 1 ? "" : "s"} are deleted with it. `,
        "Deleted runs are kept for the retention period (30 days by default) and can be restored until then."),
      onConfirm: async () => {
        const res = await ui.deleteExperiment(x.experiment_id);
        toast(`Deleted ${x.name} and ${res.runs_deleted} run(s)`);
        await load();
      },
    });
  }

  async function restore(x) {
    try {
      const res = await ui.restoreExperiment(x.experiment_id);
      toast(`Restored ${x.name} and ${res.runs_restored} run(s)`);
      await load();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  await load();
  return poller(load, 15000);
}
