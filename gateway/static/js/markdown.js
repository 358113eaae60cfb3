// A small, safe markdown renderer for answers: everything is escaped first, then code fences, inline code,
// bold, italics, links (http/https only), headings, lists, quotes and paragraphs are marked up. No HTML
// from the model survives. An unclosed fence (an answer still streaming) is code to the end.

function escape(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function inline(text) {
  return text
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>');
}

const ITEM = /^\s*([-*+]|\d+[.)])\s+/;
const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;

/** One block of lines between blank lines: headings, lists, quotes and paragraphs, in the order written. */
function blocks(lines, out) {
  let run = [];
  let kind = null;
  const flush = () => {
    if (!run.length) return;
    if (kind === "list") {
      const ordered = /^\s*\d/.test(run[0]);
      const items = run.map((l) => `<li>${inline(l.replace(ITEM, ""))}</li>`).join("");
      out.push(ordered ? `<ol>${items}</ol>` : `<ul>${items}</ul>`);
    } else if (kind === "quote") {
      out.push(`<blockquote>${run.map((l) => inline(l.replace(/^&gt;\s?/, ""))).join("<br>")}</blockquote>`);
    } else {
      out.push(`<p>${run.map(inline).join("<br>")}</p>`);
    }
    run = [];
  };
  for (const line of lines) {
    const heading = HEADING.exec(line);
    if (heading) {
      flush();
      out.push(`<h${heading[1].length}>${inline(heading[2])}</h${heading[1].length}>`);
      continue;
    }
    const next = ITEM.test(line) ? "list" : line.startsWith("&gt;") ? "quote" : "text";
    if (next !== kind) flush();
    kind = next;
    run.push(line);
  }
  flush();
}

export function render(markdown) {
  const out = [];
  const parts = escape(markdown).split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      out.push(`<pre><code>${part.replace(/\n$/, "")}</code></pre>`);
      return;
    }
    for (const block of part.split(/\n{2,}/)) {
      if (block.trim()) blocks(block.split("\n"), out);
    }
  });
  return out.join("");
}
