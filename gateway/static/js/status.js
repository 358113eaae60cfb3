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

export async function refresh() {
  try {
    const [list, depths] = await Promise.all([models(), queues()]);
    $("models").tBodies[0].replaceChildren(...list.map((m) => {
      const row = document.createElement("tr");
      const progress = m.progress ? ` (${m.progress.files_done}/${m.progress.files_total} files)` : "";
      const cells = [m.id, m.type, `${m.state ?? "?"}${progress}${m.reason ? `: ${m.reason}` : ""}`,
        m.active === undefined ? "" : `${m.active} / ${depths[m.id] ?? m.waiting}`, (m.aliases ?? []).join(", ")];
      for (const text of cells) row.append(Object.assign(document.createElement("td"), { textContent: text }));
      const actions = document.createElement("td");
      if (m.state !== undefined) actions.append(action("Load", m.id, "load"), action("Unload", m.id, "unload"));
      row.append(actions);
      return row;
    }));
  } catch (error) {
    showError(error);
  }
}

export function setUpStatus() {
  $("refresh").addEventListener("click", refresh);
}
