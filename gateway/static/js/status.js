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
      await request(`/admin/models/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
    } catch (error) {
      showError(error);
    }
    refresh();
  });
  return button;
}

export async function refresh() {
  try {
    const list = await models();
    $("models").tBodies[0].replaceChildren(...list.map((m) => {
      const row = document.createElement("tr");
      const progress = m.progress ? ` (${m.progress.files_done}/${m.progress.files_total} files)` : "";
      const cells = [m.id, m.type, `${m.state ?? "?"}${progress}${m.reason ? `: ${m.reason}` : ""}`,
        m.active === undefined ? "" : `${m.active} / ${m.waiting}`, (m.aliases ?? []).join(", ")];
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
