// Embeddings: a few texts, their cosine similarities as a heatmap.

import { postJson, showError } from "./api.js";

const $ = (id) => document.getElementById(id);

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

async function compare() {
  showError(null);
  const texts = $("embed-input").value.split("\n").map((t) => t.trim()).filter(Boolean);
  try {
    const body = await postJson("/v1/embeddings", { model: $("embedding-model").value, input: texts });
    const vectors = body.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
    const table = $("heatmap");
    const head = document.createElement("tr");
    head.append(document.createElement("th"), ...texts.map((_, j) => Object.assign(document.createElement("th"),
      { scope: "col", textContent: `${j + 1}` })));
    const rows = texts.map((text, i) => {
      const row = document.createElement("tr");
      row.append(Object.assign(document.createElement("th"), { scope: "row", textContent: `${i + 1}. ${text}` }));
      for (let j = 0; j < texts.length; j++) {
        const s = cosine(vectors[i], vectors[j]);
        const cell = document.createElement("td");
        cell.textContent = s.toFixed(2);
        cell.style.background = `hsl(${210 - 210 * Math.max(0, s)} 70% ${90 - 40 * Math.max(0, s)}%)`;
        row.append(cell);
      }
      return row;
    });
    table.replaceChildren(head, ...rows);
  } catch (error) {
    showError(error);
  }
}

export function setUpEmbeddings() {
  $("embed").addEventListener("click", compare);
}
