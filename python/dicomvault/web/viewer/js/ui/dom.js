// Building DOM without markup strings: every text goes through createTextNode / textContent,
// so values from files and from the archive can never become elements or scripts.

/** h("div.cls#id", {attr: v, onclick: fn}, ...children): children are nodes or plain text. */
export function h(spec, attrs = {}, ...children) {
  const [tagPart, ...rest] = spec.split(/(?=[.#])/);
  const el = document.createElement(tagPart || "div");
  for (const r of rest) {
    if (r[0] === ".") el.classList.add(r.slice(1));
    else if (r[0] === "#") el.id = r.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = String(v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

export function debounce(fn, ms) {
  let t = 0;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export function toast(text, kind = "info") {
  const el = h(`div.toast.${kind}`, { role: "status", text });
  document.body.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}
