// Status: the configured models, their state and load, with load and unload (admin routes).

import { models, request, showError } from "./api.js";

const $ = (id) => document.getElementById(id);

function action(label, name, verb) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", async () => {
    showError(null);
    try {
      await request(`/admin/models/${encodeURIComponent(name)}/${verb}`, { method: "POST", json: {} });
    } catch (error) {
      showError(error);
    }
    refresh();
  });
  return button;
}

/** Requests waiting for each model, from the Prometheus exposition at /metrics. */
async function queues() {
  try {
    const text = await (await request("/metrics")).text();
    const depths = {};
    for (const m of text.matchAll(/^syn4pse_queue_depth\{model="([^"]+)"\} ([0-9.e+-]+)$/gm)) depths[m[1]] = Number(m[2]);
    return depths;
  } catch {
    return {};
  }
}

let shown = "";

/** What one row shows: its cells' text, and the download's progress. */
function describe(m, depths) {
  const progress = m.progress ? ` (${m.progress.files_done}/${m.progress.files_total} files)` : "";
  return {
    id: m.id, progress: m.progress, admin: m.state !== undefined,
    cells: [m.id, m.type, `${m.state ?? "?"}${progress}${m.reason ? `: ${m.reason}` : ""}`,
      m.active === undefined ? "" : `${m.active} / ${depths[m.id] ?? m.waiting}`, (m.aliases ?? []).join(", ")],
  };
}

function rowOf(shownRow) {
  const row = document.createElement("tr");
  for (const text of shownRow.cells) row.append(Object.assign(document.createElement("td"), { textContent: text }));
  if (shownRow.progress?.files_total) {
    const bar = Object.assign(document.createElement("progress"), {
      max: shownRow.progress.files_total, value: shownRow.progress.files_done });
    bar.setAttribute("aria-label", `${shownRow.id}: files downloaded`);
    row.cells[2].append(bar);
  }
  const actions = document.createElement("td");
  if (shownRow.admin) actions.append(action("Load", shownRow.id, "load"), action("Unload", shownRow.id, "unload"));
  row.append(actions);
  return row;
}

export async function refresh() {
  try {
    const [list, depths] = await Promise.all([models(), queues()]);
    const rows = list.map((m) => describe(m, depths));
    const seen = JSON.stringify(rows);
    if (seen === shown) return; // unchanged: the rows (and a button being pressed) stay as they are
    shown = seen;
    $("models").tBodies[0].replaceChildren(...rows.map(rowOf));
  } catch (error) {
    showError(error);
  }
}

const EVERY_MS = 2000;

/** While the Status tab is open (and the page is seen), the table follows the gateway: downloads, loads, queues. */
export function setUpStatus() {
  $("refresh").addEventListener("click", refresh);
  setInterval(() => {
    if (!$("status").hidden && document.visibilityState === "visible") refresh();
  }, EVERY_MS);
}
