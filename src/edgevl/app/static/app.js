// The search page: text search, a grid of results, click a photo to see the photos most similar to it.
"use strict";

const grid = document.getElementById("grid");
const info = document.getElementById("info");
const form = document.getElementById("search-form");

function card(hit) {
  const el = document.createElement("figure");
  el.className = "card";
  el.dataset.id = hit.id;
  el.dataset.path = hit.path;
  const img = document.createElement("img");
  img.src = hit.thumb;
  img.alt = hit.caption || hit.name;
  img.title = "show similar photos";
  img.addEventListener("click", () => showSimilar(hit));
  const meta = document.createElement("figcaption");
  meta.className = "meta";
  const caption = document.createElement("p");
  caption.className = "caption";
  caption.textContent = hit.caption;
  const tags = document.createElement("div");
  for (const tag of hit.tags) {
    const chip = document.createElement("span");
    chip.className = "tag";
    chip.textContent = tag.label;
    chip.title = `p = ${tag.p}`;
    tags.append(chip);
  }
  const name = document.createElement("a");
  name.className = "name";
  name.href = hit.photo;
  name.target = "_blank";
  name.rel = "noopener";
  name.textContent = `${hit.name} · ${hit.score.toFixed(3)}`;
  meta.append(caption, tags, name);
  el.append(img, meta);
  return el;
}

async function show(url, label) {
  info.textContent = "searching…";
  const response = await fetch(url);
  if (!response.ok) {
    info.textContent = `error ${response.status}`;
    return;
  }
  const data = await response.json();
  grid.replaceChildren(...data.results.map(card));
  info.textContent = `${data.results.length} photos ${label}`;
  grid.dataset.query = label;
}

function search(q, minus) {
  const params = new URLSearchParams({ q, minus });
  history.replaceState(null, "", `#${params}`);
  return show(`/api/search?${params}`, `for “${q}”` + (minus ? ` but not “${minus}”` : ""));
}

function showSimilar(hit) {
  history.replaceState(null, "", `#similar=${hit.id}`);
  return show(`/api/similar/${hit.id}`, `similar to ${hit.name}`);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("q").value.trim();
  if (q) search(q, document.getElementById("minus").value.trim());
});

const start = new URLSearchParams(location.hash.slice(1));
if (start.get("similar")) {
  show(`/api/similar/${encodeURIComponent(start.get("similar"))}`, "similar to the chosen photo");
} else if (start.get("q")) {
  document.getElementById("q").value = start.get("q");
  search(start.get("q"), start.get("minus") || "");
}
