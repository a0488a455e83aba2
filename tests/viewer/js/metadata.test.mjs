// The metadata panel (js/ui/metadata.js): pure helpers, and the DOM part on a tiny fake document
// whose innerHTML/outerHTML/insertAdjacentHTML throw, so markup injection cannot pass unnoticed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { lookupTag } from "../../../python/dicomvault/web/viewer/js/data/dictionary.js";
import {
  base64Length,
  describeTag,
  filterRows,
  flattenRows,
  formatTag,
  formatValue,
  renderMetadata,
  visibleRows,
} from "../../../python/dicomvault/web/viewer/js/ui/metadata.js";

const SCRIPT = "<script>alert(1)</script>";
const IMG = '<img src=x onerror="alert(2)">';

const INSTANCE = {
  "00080018": { vr: "UI", Value: ["1.2.3.4"] },
  "00080060": { vr: "CS", Value: ["CT"] },
  "00100010": { vr: "PN", Value: [{ Alphabetic: SCRIPT, Ideographic: "X" }] },
  "00100020": { vr: "LO", Value: [IMG] },
  "00280030": { vr: "DS", Value: [0.5, 0.25] },
  "00281050": { vr: "DS", Value: [40, null, 400] },
  "00209165": { vr: "AT", Value: ["00209056", "00209057"] },
  "00081140": {
    vr: "SQ",
    Value: [
      { "00081150": { vr: "UI", Value: ["1.2.840.10008.5.1.4.1.1.2"] }, "00081155": { vr: "UI", Value: ["9.8.7"] } },
      {
        "00081155": { vr: "UI", Value: ["9.8.6"] },
        "00089215": { vr: "SQ", Value: [{ "00080104": { vr: "LO", Value: ["Needle In Haystack"] } }] },
      },
    ],
  },
  "00400275": { vr: "SQ" },
  "00291010": { vr: "OB", InlineBinary: "AAECAwQ=" },
  "00290010": { vr: "LO", Value: ["SIEMENS CSA HEADER"] },
  "7FE00010": { vr: "OW", BulkDataURI: "https://pacs.example/studies/1/bulk/7FE00010" },
  "60003000": { vr: "OW", InlineBinary: "AAAA" },
  "00181000": { vr: "LO", Value: ["x".repeat(500)] },
};

test("formatTag and base64Length", () => {
  assert.equal(formatTag("00100010"), "(0010,0010)");
  assert.equal(formatTag("7fe00010"), "(7FE0,0010)");
  assert.equal(base64Length("AAECAwQ="), 5);
  assert.equal(base64Length("AAAA"), 3);
  assert.equal(base64Length("AA=="), 1);
  assert.equal(base64Length(""), 0);
});

test("built-in dictionary: public, repeating, retired and unknown tags", () => {
  assert.deepEqual(lookupTag("00100010"), { keyword: "PatientName", name: "Patient's Name", retired: false });
  assert.equal(lookupTag("7fe00010").keyword, "PixelData");
  assert.equal(lookupTag("60003000").keyword, "OverlayData");
  assert.equal(lookupTag("601E3000").keyword, "OverlayData");
  assert.equal(lookupTag("60013000"), null); // odd group: private, not an overlay
  assert.equal(lookupTag("00081155").keyword, "ReferencedSOPInstanceUID");
  assert.equal(lookupTag("00280040").retired, true); // Image Format, retired
  assert.equal(lookupTag("FFFF0001"), null);
});

test("describeTag: private creators name their block", () => {
  assert.deepEqual(describeTag("00290010", lookupTag, INSTANCE), {
    keyword: "PrivateCreator",
    name: "Private Creator",
    retired: false,
    private: true,
  });
  assert.equal(describeTag("00291010", lookupTag, INSTANCE).name, "Private tag (SIEMENS CSA HEADER)");
  assert.equal(describeTag("00080000", lookupTag).keyword, "GroupLength");
  assert.equal(describeTag("00100010", { "00100010": ["Custom", "Custom Name"] }).keyword, "Custom");
});

test("formatValue: PN, multiple values, AT, binary, bulk data, sequences, truncation", () => {
  assert.equal(formatValue(INSTANCE["00100010"]).text, SCRIPT);
  assert.equal(formatValue({ vr: "PN", Value: [{ Ideographic: "山田" }] }).text, "山田");
  assert.equal(formatValue(INSTANCE["00280030"]).text, "0.5\\0.25");
  assert.equal(formatValue(INSTANCE["00281050"]).text, "40\\\\400");
  assert.equal(formatValue(INSTANCE["00209165"]).text, "(0020,9056)\\(0020,9057)");
  assert.equal(formatValue(INSTANCE["00291010"]).text, "<5 bytes>");
  assert.equal(formatValue(INSTANCE["7FE00010"]).text, "https://pacs.example/studies/1/bulk/7FE00010");
  assert.equal(formatValue(INSTANCE["00081140"]).text, "2 items");
  assert.equal(formatValue(INSTANCE["00400275"]).text, "0 items");
  assert.equal(formatValue({ vr: "LO" }).text, "");
  const long = formatValue(INSTANCE["00181000"], { maxLength: 40 });
  assert.equal(long.truncated, true);
  assert.equal(long.text.length, 40);
  assert.ok(long.text.endsWith("…"));
  assert.equal(long.full, "x".repeat(500));
  const huge = formatValue({ vr: "US", Value: new Array(100000).fill(65535) });
  assert.ok(huge.full.length < 20000 && huge.full.endsWith("(100000 values)"));
});

test("flattenRows: tag order, nesting, numbered items", () => {
  const rows = flattenRows(INSTANCE);
  const ids = rows.map((r) => r.id);
  assert.deepEqual(ids.slice(0, 3), ["00080018", "00080060", "00081140"]);
  const seq = rows.find((r) => r.id === "00081140");
  assert.equal(seq.keyword, "ReferencedImageSequence");
  assert.equal(seq.container, true);
  const item2 = rows.find((r) => r.id === "00081140/1");
  assert.equal(item2.kind, "item");
  assert.equal(item2.keyword, "Item 2");
  assert.equal(item2.depth, 1);
  const deep = rows.find((r) => r.id === "00081140/1/00089215/0/00080104");
  assert.equal(deep.depth, 4);
  assert.equal(deep.parentId, "00081140/1/00089215/0");
  assert.equal(deep.text, "Needle In Haystack");
  assert.equal(rows.find((r) => r.id === "00400275").container, false);
  // parents always precede their children
  const seen = new Set();
  for (const r of rows) {
    if (r.parentId !== null) assert.ok(seen.has(r.parentId), r.id);
    seen.add(r.id);
  }
});

test("filterRows finds a nested value and keeps the rows containing it", () => {
  const rows = flattenRows(INSTANCE);
  const hits = filterRows(rows, "  needle in HAYSTACK ").map((r) => r.id);
  assert.deepEqual(hits, [
    "00081140",
    "00081140/1",
    "00081140/1/00089215",
    "00081140/1/00089215/0",
    "00081140/1/00089215/0/00080104",
  ]);
  assert.deepEqual(filterRows(rows, "(0010,0010)").map((r) => r.id), ["00100010"]);
  assert.deepEqual(filterRows(rows, "00100020").map((r) => r.id), ["00100020"]);
  assert.deepEqual(filterRows(rows, "patientname").map((r) => r.id), ["00100010"]);
  assert.deepEqual(filterRows(rows, "9.8.6").map((r) => r.id), ["00081140", "00081140/1", "00081140/1/00081155"]);
  assert.deepEqual(filterRows(rows, "no such thing"), []);
  assert.equal(filterRows(rows, "").length, rows.length);
});

test("visibleRows: sequences start closed, a filter shows hits inside closed ones", () => {
  const rows = flattenRows(INSTANCE);
  const closed = visibleRows(rows).map((r) => r.id);
  assert.ok(closed.includes("00081140"));
  assert.ok(!closed.includes("00081140/0"));
  const opened = visibleRows(rows, { toggled: new Set(["00081140"]) }).map((r) => r.id);
  assert.ok(opened.includes("00081140/0/00081150"));
  assert.ok(opened.includes("00081140/1/00089215"));
  assert.ok(!opened.includes("00081140/1/00089215/0"));
  const itemClosed = visibleRows(rows, { toggled: new Set(["00081140", "00081140/0"]) }).map((r) => r.id);
  assert.ok(itemClosed.includes("00081140/0"));
  assert.ok(!itemClosed.includes("00081140/0/00081150"));
  assert.ok(visibleRows(rows, { query: "haystack" }).some((r) => r.id.endsWith("00080104")));
});

// --- a fake document: just what renderMetadata uses --------------------------------------------

class FakeText {
  constructor(text) {
    this.nodeType = 3;
    this.data = String(text);
  }
  get textContent() {
    return this.data;
  }
}

class FakeElement {
  constructor(doc, tagName) {
    this.ownerDocument = doc;
    this.nodeType = 1;
    this.tagName = tagName.toUpperCase();
    this.childNodes = [];
    this.attributes = new Map();
    this.listeners = new Map();
    this.style = {};
    this.className = "";
    this.value = "";
  }
  appendChild(node) {
    this.childNodes.push(node);
    return node;
  }
  setAttribute(name, value) {
    this.attributes.set(name, String(value));
  }
  getAttribute(name) {
    return this.attributes.has(name) ? this.attributes.get(name) : null;
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }
  dispatch(type) {
    for (const fn of this.listeners.get(type) ?? []) fn({ type, target: this });
  }
  get textContent() {
    return this.childNodes.map((c) => c.textContent).join("");
  }
  set textContent(text) {
    this.childNodes = text ? [new FakeText(text)] : [];
  }
  set innerHTML(_) {
    throw new Error("innerHTML used");
  }
  set outerHTML(_) {
    throw new Error("outerHTML used");
  }
  insertAdjacentHTML() {
    throw new Error("insertAdjacentHTML used");
  }
  *walk() {
    yield this;
    for (const c of this.childNodes) if (c instanceof FakeElement) yield* c.walk();
  }
  findAll(pred) {
    return [...this.walk()].filter(pred);
  }
}

class FakeDocument {
  createElement(tag) {
    return new FakeElement(this, tag);
  }
  createTextNode(text) {
    return new FakeText(text);
  }
}

const bodyRows = (container) => container.findAll((e) => e.tagName === "TR" && e.getAttribute("data-id") !== null);
const rowById = (container, id) => bodyRows(container).find((tr) => tr.getAttribute("data-id") === id);

test("renderMetadata: hostile values are text, never markup", () => {
  const doc = new FakeDocument();
  const container = doc.createElement("div");
  renderMetadata(container, INSTANCE);
  for (const [id, text] of [["00100010", SCRIPT], ["00100020", IMG]]) {
    const cells = rowById(container, id).childNodes;
    assert.equal(cells[3].textContent, text);
    assert.ok(cells[3].childNodes.every((n) => n instanceof FakeText), "value cell holds only text nodes");
  }
  const tags = new Set(container.findAll(() => true).map((e) => e.tagName));
  assert.ok(!tags.has("SCRIPT") && !tags.has("IMG"), [...tags].join(","));
  // and no markup sink anywhere in the module's source, for paths this test does not reach
  const source = readFileSync(new URL("../../../python/dicomvault/web/viewer/js/ui/metadata.js", import.meta.url), "utf8");
  for (const sink of ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "createContextualFragment"]) {
    assert.ok(!source.includes(sink), `metadata.js mentions ${sink}`);
  }
});

test("renderMetadata: table columns, truncation tooltip, expand, collapse, filter", () => {
  const doc = new FakeDocument();
  const container = doc.createElement("div");
  const panel = renderMetadata(container, INSTANCE, { maxLength: 40 });
  const name = rowById(container, "00100010").childNodes;
  assert.equal(name[0].textContent, "(0010,0010)");
  assert.equal(name[1].textContent, "PatientName");
  assert.equal(name[2].textContent, "PN");
  const long = rowById(container, "00181000").childNodes[3];
  assert.equal(long.getAttribute("title"), "x".repeat(500));
  assert.equal(long.textContent.length, 40);

  assert.equal(rowById(container, "00081140/0"), undefined, "sequences start collapsed");
  const toggle = rowById(container, "00081140").findAll((e) => e.tagName === "BUTTON")[0];
  assert.equal(toggle.getAttribute("aria-expanded"), "false");
  toggle.dispatch("click");
  assert.ok(rowById(container, "00081140/0/00081155"));
  assert.equal(rowById(container, "00081140").childNodes[0].childNodes[0].getAttribute("aria-expanded"), "true");
  panel.toggle("00081140");
  assert.equal(rowById(container, "00081140/0"), undefined);

  const search = container.findAll((e) => e.tagName === "INPUT")[0];
  search.value = "HAYSTACK";
  search.dispatch("input");
  assert.deepEqual(
    bodyRows(container).map((tr) => tr.getAttribute("data-id")),
    ["00081140", "00081140/1", "00081140/1/00089215", "00081140/1/00089215/0", "00081140/1/00089215/0/00080104"],
  );
  panel.setQuery("nothing matches this");
  assert.equal(bodyRows(container).length, 0);
  assert.match(container.textContent, /No attribute matches/);
  panel.setQuery("");
  assert.equal(panel.visibleCount(), visibleRows(panel.rows).length);
  panel.destroy();
  assert.equal(container.childNodes.length, 0);
});

test("renderMetadata: maxRows bounds what is drawn", () => {
  const big = { "52009230": { vr: "SQ", Value: [] } };
  for (let n = 0; n < 300; n++) big["52009230"].Value.push({ "00209157": { vr: "UL", Value: [n + 1, 1] } });
  const doc = new FakeDocument();
  const container = doc.createElement("div");
  const panel = renderMetadata(container, big, { maxRows: 50 });
  panel.toggle("52009230");
  assert.equal(bodyRows(container).length, 50);
  assert.match(container.textContent, /Showing 50 of 601 rows/);
});

test("the dictionary option takes lookupTag, the module namespace or a plain map", async () => {
  const ns = await import("../../../python/dicomvault/web/viewer/js/data/dictionary.js");
  for (const dictionary of [lookupTag, ns, ns.TAGS]) {
    assert.equal(flattenRows(INSTANCE, { dictionary }).find((r) => r.id === "00100010").keyword, "PatientName");
  }
});
