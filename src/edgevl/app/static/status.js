// The index-status page: what the database holds, which models made it, and every skipped file.
"use strict";

function row(table, key, value) {
  const tr = table.insertRow();
  const th = document.createElement("th");
  th.textContent = key;
  tr.append(th);
  tr.insertCell().textContent = value;
}

async function main() {
  const out = document.getElementById("status");
  const s = await (await fetch("/api/status")).json();
  const table = document.createElement("table");
  row(table, "database", `${s.database} (${(s.database_bytes / 1e6).toFixed(1)} MB)`);
  row(table, "images", s.images);
  row(table, "folders", s.roots.join("\n"));
  row(table, "model", s.fingerprint ? `${s.fingerprint.model} (dim ${s.fingerprint.dim}, edgevl ${s.fingerprint.edgevl})` : "-");
  row(table, "captioner", s.fingerprint ? s.fingerprint.captioner : "-");
  row(table, "vector index", s.vector_index);
  row(table, "skipped", Object.entries(s.skipped_by_kind).map(([k, n]) => `${n} ${k}`).join(", ") || "none");
  const skipped = document.createElement("table");
  skipped.id = "skipped";
  for (const item of s.skipped) {
    const tr = skipped.insertRow();
    for (const text of [item.path, item.kind, item.reason]) tr.insertCell().textContent = text;
  }
  out.replaceChildren(table, skipped);
}

main();
