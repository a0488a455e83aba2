// The metadata panel: every attribute of one DICOM JSON instance (PS3.18 F.2) as a table, nested
// sequences collapsible, with a filter box.
//
// Safety: attribute values come from files anyone may have stored, so every value reaches the DOM
// through textContent, createTextNode or an attribute value (title), never as markup.
//
// The table is a flat list of rows (flattenRows) in document order; sequences and their items are
// rows whose descendants follow them. Filtering and expansion are pure functions of that list, so
// they are tested without a DOM, and the DOM part only draws the rows it is given.

import { lookupTag } from "../data/dictionary.js";

/**
 * @typedef {object} Row
 * @property {string} id        path of tags and item numbers ("00081140/0/00081150"), unique
 * @property {string|null} parentId
 * @property {number} depth     0 for top-level attributes; a sequence's items are depth + 1, their attributes + 2
 * @property {"element"|"item"} kind
 * @property {string} tag       8 upper-case hex digits, "" for item rows
 * @property {string} tagText   "(GGGG,EEEE)", "" for item rows
 * @property {string} keyword   dictionary keyword, "PrivateCreator", "" when unknown; "Item n" for item rows
 * @property {string} name      dictionary name (or a private tag's creator), for the tooltip
 * @property {string} vr
 * @property {string} text      the value as shown (possibly truncated)
 * @property {string} full      the whole value text (the tooltip when truncated)
 * @property {boolean} truncated
 * @property {boolean} container  a sequence with items, or an item with attributes
 * @property {boolean} defaultOpen  items start open, sequences closed
 * @property {boolean} retired
 * @property {boolean} private
 * @property {string} search    lower-case text the filter matches against
 */

/**
 * tag -> {keyword, name}: a function (lookupTag), the dictionary module's namespace, or a map from
 * tag to [keyword, name] or {keyword, name}.
 * @typedef {((tag: string) => ({keyword: string, name: string, retired?: boolean} | null)) |
 *           Record<string, [string, string] | [string, string, 1] | {keyword: string, name: string}>} Dictionary
 */

// Beyond this a value's text (and tooltip) stops: a 64k-entry LUT joined in full would only slow
// the panel down, and nobody reads it in a tooltip.
const FULL_TEXT_CAP = 16384;

/**
 * "00100010" -> "(0010,0010)".
 * @param {string} tag
 * @returns {string}
 */
export function formatTag(tag) {
  const t = String(tag).toUpperCase();
  return `(${t.slice(0, 4)},${t.slice(4, 8)})`;
}

/**
 * Decoded length of a base64 string (InlineBinary), without decoding it.
 * @param {string} b64
 * @returns {number}
 */
export function base64Length(b64) {
  const s = String(b64).replace(/[^A-Za-z0-9+/=_-]/g, "");
  const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
  return Math.floor(((s.length - pad) * 3) / 4);
}

/**
 * Keyword and name for a tag: the dictionary for public tags; private tags (odd groups) are named by
 * their creator when the dataset has one.
 * @param {string} tag
 * @param {Dictionary} [dictionary]
 * @param {Record<string, any>} [dataset] the dataset holding the tag, for private creators
 * @returns {{keyword: string, name: string, retired: boolean, private: boolean}}
 */
export function describeTag(tag, dictionary = lookupTag, dataset = undefined) {
  const t = String(tag).toUpperCase();
  const group = parseInt(t.slice(0, 4), 16);
  const element = parseInt(t.slice(4, 8), 16);
  if (group % 2 === 1) {
    if (element === 0) return { keyword: "PrivateGroupLength", name: "Private Group Length", retired: false, private: true };
    if (element >= 0x10 && element <= 0xff) {
      return { keyword: "PrivateCreator", name: "Private Creator", retired: false, private: true };
    }
    const creatorTag = t.slice(0, 4) + "00" + t.slice(4, 6);
    const creator = dataset ? findElement(dataset, creatorTag)?.Value?.[0] : undefined;
    const name = typeof creator === "string" && creator ? `Private tag (${creator})` : "Private tag";
    return { keyword: "", name, retired: false, private: true };
  }
  const entry = lookup(dictionary, t);
  if (entry) return { keyword: entry.keyword, name: entry.name, retired: !!entry.retired, private: false };
  if (element === 0) return { keyword: "GroupLength", name: "Group Length", retired: false, private: false };
  return { keyword: "", name: "Unknown tag", retired: false, private: false };
}

function lookup(dictionary, tag) {
  if (typeof dictionary === "function") return dictionary(tag);
  if (!dictionary) return null;
  // The dictionary module's namespace (import * as dictionary) works as well as its lookupTag.
  if (typeof dictionary.lookupTag === "function") return dictionary.lookupTag(tag);
  const e = Object.prototype.hasOwnProperty.call(dictionary, tag) ? dictionary[tag] : null;
  if (!e) return null;
  if (Array.isArray(e)) return { keyword: e[0], name: e[1], retired: e.length > 2 };
  return e;
}

// Keys of DICOM JSON are 8 hex digits, upper case by the standard, but be lenient on input.
function findElement(dataset, tag) {
  if (Object.prototype.hasOwnProperty.call(dataset, tag)) return dataset[tag];
  const lower = tag.toLowerCase();
  return Object.prototype.hasOwnProperty.call(dataset, lower) ? dataset[lower] : undefined;
}

function valueText(v, vr) {
  if (v === null || v === undefined) return "";
  if (vr === "PN" && typeof v === "object") {
    // The Alphabetic group is what people read; fall back so a name stored only in ideographic or
    // phonetic form still shows.
    return String(v.Alphabetic ?? v.Ideographic ?? v.Phonetic ?? "");
  }
  if (vr === "AT" && typeof v === "string" && /^[0-9A-Fa-f]{8}$/.test(v)) return formatTag(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/**
 * The text of one element's value: PN as its Alphabetic group, multiple values joined with a
 * backslash as in DICOM, binary as "<N bytes>" or its BulkDataURI, a sequence as its item count.
 * @param {{vr?: string, Value?: any[], InlineBinary?: string, BulkDataURI?: string}} element
 * @param {{maxLength?: number}} [options] longer text is cut to maxLength characters ending in "…"
 * @returns {{text: string, full: string, truncated: boolean}}
 */
export function formatValue(element, { maxLength = 160 } = {}) {
  let full = "";
  const vr = element?.vr ?? "";
  if (!element || typeof element !== "object") {
    full = "";
  } else if (vr === "SQ") {
    const n = Array.isArray(element.Value) ? element.Value.length : 0;
    full = `${n} item${n === 1 ? "" : "s"}`;
  } else if (typeof element.InlineBinary === "string") {
    full = `<${base64Length(element.InlineBinary)} bytes>`;
  } else if (typeof element.BulkDataURI === "string") {
    full = element.BulkDataURI;
  } else if (Array.isArray(element.Value)) {
    const parts = [];
    let length = 0;
    for (let n = 0; n < element.Value.length; n++) {
      const s = valueText(element.Value[n], vr);
      parts.push(s);
      length += s.length + 1;
      if (length > FULL_TEXT_CAP) {
        parts.push(`… (${element.Value.length} values)`);
        break;
      }
    }
    full = parts.join("\\");
  }
  const truncated = full.length > maxLength;
  const text = truncated ? full.slice(0, Math.max(0, maxLength - 1)) + "…" : full;
  return { text, full, truncated };
}

/**
 * Every attribute of a DICOM JSON dataset, depth first, as table rows. Keys are taken in tag order
 * (JSON objects do not promise the order of the wire).
 * @param {Record<string, any>} instanceJson
 * @param {{dictionary?: Dictionary, maxLength?: number}} [options]
 * @returns {Row[]}
 */
export function flattenRows(instanceJson, { dictionary = lookupTag, maxLength = 160 } = {}) {
  /** @type {Row[]} */
  const rows = [];
  const walk = (dataset, parentId, depth) => {
    if (!dataset || typeof dataset !== "object") return;
    const tags = Object.keys(dataset)
      .filter((k) => /^[0-9A-Fa-f]{8}$/.test(k))
      .sort((a, b) => parseInt(a, 16) - parseInt(b, 16));
    for (const key of tags) {
      const tag = key.toUpperCase();
      const element = dataset[key] ?? {};
      const vr = typeof element.vr === "string" ? element.vr : "";
      const desc = describeTag(tag, dictionary, dataset);
      const { text, full, truncated } = formatValue(element, { maxLength });
      const id = parentId === null ? tag : `${parentId}/${tag}`;
      const items = vr === "SQ" && Array.isArray(element.Value) ? element.Value : [];
      const tagText = formatTag(tag);
      rows.push({
        id,
        parentId,
        depth,
        kind: "element",
        tag,
        tagText,
        keyword: desc.keyword,
        name: desc.name,
        vr,
        text,
        full,
        truncated,
        container: items.length > 0,
        defaultOpen: false,
        retired: desc.retired,
        private: desc.private,
        search: [tagText, tag, desc.keyword, desc.name, full].join("\u0000").toLowerCase(),
      });
      items.forEach((item, n) => {
        const itemId = `${id}/${n}`;
        const count = item && typeof item === "object" ? Object.keys(item).length : 0;
        const label = `Item ${n + 1}`;
        const summary = `${count} attribute${count === 1 ? "" : "s"}`;
        rows.push({
          id: itemId,
          parentId: id,
          depth: depth + 1,
          kind: "item",
          tag: "",
          tagText: "",
          keyword: label,
          name: `${desc.keyword || tagText} item ${n + 1}`,
          vr: "",
          text: summary,
          full: summary,
          truncated: false,
          container: count > 0,
          defaultOpen: true,
          retired: false,
          private: false,
          search: label.toLowerCase(),
        });
        walk(item, itemId, depth + 2);
      });
    }
  };
  walk(instanceJson, null, 0);
  return rows;
}

/**
 * The rows matching a filter (case-insensitive substring of the tag as "(gggg,eeee)" or 8 hex
 * digits, the keyword, the name or the full value text), each preceded by the sequence and item
 * rows that contain it, in document order. An empty query keeps every row.
 * @param {Row[]} rows
 * @param {string} query
 * @returns {Row[]}
 */
export function filterRows(rows, query) {
  const q = String(query ?? "").trim().toLowerCase();
  if (!q) return rows;
  const byId = new Map(rows.map((r) => [r.id, r]));
  const keep = new Set();
  for (const row of rows) {
    if (!row.search.includes(q)) continue;
    // Walk up until an ancestor already kept: its own ancestors are kept too.
    for (let r = row; r && !keep.has(r.id); r = r.parentId === null ? undefined : byId.get(r.parentId)) {
      keep.add(r.id);
    }
  }
  return rows.filter((r) => keep.has(r.id));
}

/**
 * Whether a container row is open: its default flipped when its id is in `toggled`.
 * @param {Row} row
 * @param {Set<string>} toggled
 * @returns {boolean}
 */
export function isOpen(row, toggled) {
  return row.defaultOpen !== toggled.has(row.id);
}

/**
 * The rows to draw. Without a query: rows whose every ancestor is open. With a query: the matches
 * and their ancestors whatever is collapsed, so a hit inside a closed sequence is never hidden.
 * @param {Row[]} rows
 * @param {{query?: string, toggled?: Set<string>}} [state]
 * @returns {Row[]}
 */
export function visibleRows(rows, { query = "", toggled = new Set() } = {}) {
  if (String(query).trim()) return filterRows(rows, query);
  const shown = new Map(); // id -> children visible
  const out = [];
  for (const row of rows) {
    const visible = row.parentId === null || shown.get(row.parentId) === true;
    if (row.container) shown.set(row.id, visible && isOpen(row, toggled));
    if (visible) out.push(row);
  }
  return out;
}

/**
 * Draw the panel into `container` (its previous content is replaced).
 * @param {Element} container
 * @param {Record<string, any>} instanceJson one instance object of a /metadata response
 * @param {{dictionary?: Dictionary, maxLength?: number, maxRows?: number}} [options]
 *        maxRows bounds the rows drawn at once (enhanced multi-frame objects have tens of thousands)
 * @returns {{rows: Row[], setQuery(query: string): void, toggle(id: string): void,
 *           visibleCount(): number, destroy(): void}}
 */
export function renderMetadata(container, instanceJson, { dictionary = lookupTag, maxLength = 160, maxRows = 5000 } = {}) {
  const doc = container.ownerDocument;
  const rows = flattenRows(instanceJson, { dictionary, maxLength });
  const toggled = new Set();
  let query = "";
  let drawn = 0;

  const el = (tag, className, text) => {
    const e = doc.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.appendChild(doc.createTextNode(text));
    return e;
  };

  container.textContent = "";
  const root = el("div", "dv-meta");
  const search = el("input", "dv-meta-search");
  search.setAttribute("type", "search");
  search.setAttribute("placeholder", "Filter by tag, keyword or value");
  search.setAttribute("aria-label", "Filter attributes");
  const table = el("table", "dv-meta-table");
  const thead = el("thead");
  const headRow = el("tr");
  for (const h of ["Tag", "Keyword", "VR", "Value"]) headRow.appendChild(el("th", "", h));
  thead.appendChild(headRow);
  const tbody = el("tbody");
  table.appendChild(thead);
  table.appendChild(tbody);
  root.appendChild(search);
  root.appendChild(table);
  container.appendChild(root);

  const drawRow = (row) => {
    const classes = ["dv-meta-row", row.kind === "item" ? "dv-meta-item" : ""];
    if (row.vr === "SQ") classes.push("dv-meta-sq");
    if (row.retired) classes.push("dv-meta-retired");
    if (row.private) classes.push("dv-meta-private");
    const tr = el("tr", classes.filter(Boolean).join(" "));
    tr.setAttribute("data-id", row.id);
    const tagCell = el("td", "dv-meta-tag");
    tagCell.style.paddingLeft = `${0.25 + row.depth * 1.25}em`;
    if (row.container) {
      const open = query.trim() !== "" || isOpen(row, toggled);
      const button = el("button", "dv-meta-toggle", open ? "▾" : "▸");
      button.setAttribute("type", "button");
      button.setAttribute("aria-expanded", String(open));
      button.setAttribute("aria-label", open ? "Collapse" : "Expand");
      if (query.trim()) button.setAttribute("disabled", "");
      button.addEventListener("click", () => toggle(row.id));
      tagCell.appendChild(button);
    }
    tagCell.appendChild(doc.createTextNode(row.tagText));
    const keyword = el("td", "dv-meta-keyword", row.keyword);
    if (row.name) keyword.setAttribute("title", row.name);
    const value = el("td", "dv-meta-value", row.text);
    if (row.truncated) value.setAttribute("title", row.full);
    tr.appendChild(tagCell);
    tr.appendChild(keyword);
    tr.appendChild(el("td", "dv-meta-vr", row.vr));
    tr.appendChild(value);
    tbody.appendChild(tr);
  };

  const note = (text) => {
    const tr = el("tr", "dv-meta-note");
    const td = el("td", "", text);
    td.setAttribute("colspan", "4");
    tr.appendChild(td);
    tbody.appendChild(tr);
  };

  const render = () => {
    tbody.textContent = "";
    const list = visibleRows(rows, { query, toggled });
    drawn = Math.min(list.length, maxRows);
    for (let n = 0; n < drawn; n++) drawRow(list[n]);
    if (list.length > drawn) note(`Showing ${drawn} of ${list.length} rows: refine the filter to see the rest.`);
    if (list.length === 0) note(query.trim() ? "No attribute matches the filter." : "No attributes.");
  };

  function toggle(id) {
    if (toggled.has(id)) toggled.delete(id);
    else toggled.add(id);
    render();
  }

  search.addEventListener("input", () => {
    query = search.value ?? "";
    render();
  });
  render();

  return {
    rows,
    setQuery(q) {
      query = String(q ?? "");
      search.value = query;
      render();
    },
    toggle,
    visibleCount: () => drawn,
    destroy() {
      container.textContent = "";
    },
  };
}
