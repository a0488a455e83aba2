// Measurements out of a DICOM SR "Imaging Measurement Report" (PS3.16 TID 1500), given as the
// DICOM JSON (PS3.18 F.2) of one instance, in the shape the viewer POSTs to
// /api/studies/{study}/measurements:
//
//   {kind: "length"|"angle"|"ellipse"|"rectangle", label,
//    image: {series, instance, sop_class, frame},
//    points: [[col, row], ...],       // PS3.3 C.18.6.1.1: 0,0 = top left corner of the top left pixel
//    values: [{name: "length"|"angle"|"area"|"mean"|"sd"|"min"|"max", value, unit}]}
//
// Reads what dicomvault writes (python/dicomvault/analysis/sr.py) and the usual variants of other
// TID 1500 writers: the region either in the group (TID 1410 "Image Region") or under each NUM
// (INFERRED FROM, by value or by reference), ROI statistics either as a Derivation modifier
// (TID 1419, dcmqi) or as the NUM's own concept (dcmjs/OHIF), legacy SRT codes.
// kind: ELLIPSE (4 points) = ellipse, closed POLYLINE of 5 points = rectangle (4 corners), open
// POLYLINE of 2 = length, of 3 = angle (vertex second). Groups of other shapes are left out.
// No dependencies: plain ES module.

const T = Object.freeze({
  SOPClassUID: "00080016",
  CodeValue: "00080100",
  CodingSchemeDesignator: "00080102",
  CodeMeaning: "00080104",
  LongCodeValue: "00080119",
  URNCodeValue: "00080120",
  ReferencedSeriesSequence: "00081115",
  ReferencedSOPClassUID: "00081150",
  ReferencedSOPInstanceUID: "00081155",
  ReferencedFrameNumber: "00081160",
  ReferencedSOPSequence: "00081199",
  SeriesInstanceUID: "0020000E",
  MeasurementUnitsCodeSequence: "004008EA",
  RelationshipType: "0040A010",
  ValueType: "0040A040",
  ConceptNameCodeSequence: "0040A043",
  UID: "0040A124",
  TextValue: "0040A160",
  FloatingPointValue: "0040A161",
  ConceptCodeSequence: "0040A168",
  MeasuredValueSequence: "0040A300",
  NumericValue: "0040A30A",
  CurrentRequestedProcedureEvidenceSequence: "0040A375",
  PertinentOtherEvidenceSequence: "0040A385",
  ContentTemplateSequence: "0040A504",
  ContentSequence: "0040A730",
  TemplateIdentifier: "0040DB00",
  ReferencedContentItemIdentifier: "0040DB73",
  GraphicData: "00700022",
  GraphicType: "00700023",
});

const SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88.";
// CID 7021 Measurement Report Document Titles.
const REPORT_TITLES = new Set(["DCM:126000", "DCM:126001", "DCM:126002", "DCM:126003"]);
const IMAGING_MEASUREMENTS = "DCM:126010";
const MEASUREMENT_GROUP = "DCM:125007";
const TRACKING_IDENTIFIER = "DCM:112039";
const DERIVATION = "DCM:121401";

// NUM concept -> value name. SRT codes are the pre-2019 SNOMED RT forms some writers still use.
const CONCEPTS = new Map([
  ["SCT:410668003", "length"], ["DCM:121227", "length"], ["DCM:121206", "length"],
  ["SCT:1483009", "angle"], ["DCM:110859", "angle"],
  ["SCT:42798000", "area"], ["SCT:131184002", "area"], ["SRT:G-A166", "area"], ["SRT:G-D7FE", "area"],
]);
// Derivation (CID 7464) -> value name; also taken as a NUM's own concept.
const DERIVATIONS = new Map([
  ["SCT:373098007", "mean"], ["SRT:R-00317", "mean"],
  ["SCT:386136009", "sd"], ["SRT:R-10047", "sd"],
  ["SCT:255605001", "min"], ["SRT:R-404FB", "min"],
  ["SCT:56851009", "max"], ["SRT:G-A437", "max"],
]);
const UNIT_NAMES = new Map([["[hnsf'U]", "HU"]]);

function vals(obj, tag) {
  const v = obj?.[tag]?.Value;
  return Array.isArray(v) ? v : [];
}

function one(obj, tag) {
  const v = vals(obj, tag);
  return v.length ? v[0] : undefined;
}

function items(obj, tag) {
  return vals(obj, tag).filter((x) => x && typeof x === "object");
}

function codeKey(code) {
  if (!code) return null;
  const value = one(code, T.CodeValue) ?? one(code, T.LongCodeValue) ?? one(code, T.URNCodeValue);
  const scheme = one(code, T.CodingSchemeDesignator) ?? "";
  return value === undefined ? null : `${String(scheme).trim()}:${String(value).trim()}`;
}

function conceptName(item) {
  return codeKey(items(item, T.ConceptNameCodeSequence)[0]);
}

function valueType(item) {
  return String(one(item, T.ValueType) ?? "").trim();
}

function relationship(item) {
  return String(one(item, T.RelationshipType) ?? "").trim();
}

function children(item) {
  return items(item, T.ContentSequence);
}

function rootOf(metadata) {
  const ds = Array.isArray(metadata) ? metadata[0] : metadata;
  return ds && typeof ds === "object" ? ds : null;
}

function number(v) {
  if (v === undefined || v === null || v === "") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/** True when `metadata` (DICOM JSON of one instance, or an array holding it) is a TID 1500 SR. */
export function isMeasurementReport(metadata) {
  const ds = rootOf(metadata);
  if (!ds) return false;
  const sopClass = String(one(ds, T.SOPClassUID) ?? "");
  if (!sopClass.startsWith(SR_CLASS_PREFIX) || valueType(ds) !== "CONTAINER") return false;
  const template = items(ds, T.ContentTemplateSequence)
    .map((t) => String(one(t, T.TemplateIdentifier) ?? "").trim());
  return template.includes("1500") || REPORT_TITLES.has(conceptName(ds));
}

/** The measurements of a TID 1500 SR (an empty list for any other instance). */
export function measurementsFromSR(metadata) {
  const ds = rootOf(metadata);
  if (!ds || !isMeasurementReport(ds)) return [];
  const seriesOf = evidenceSeries(ds);
  const out = [];
  for (const container of children(ds)) {
    if (valueType(container) !== "CONTAINER" || conceptName(container) !== IMAGING_MEASUREMENTS) continue;
    for (const group of children(container)) {
      if (valueType(group) !== "CONTAINER" || conceptName(group) !== MEASUREMENT_GROUP) continue;
      const m = fromGroup(ds, group, seriesOf);
      if (m) out.push(m);
    }
  }
  return out;
}

/** SOP Instance UID -> Series Instance UID, from the evidence sequences (IMAGE items name no series). */
function evidenceSeries(ds) {
  const map = new Map();
  for (const tag of [T.CurrentRequestedProcedureEvidenceSequence, T.PertinentOtherEvidenceSequence]) {
    for (const study of items(ds, tag)) {
      for (const series of items(study, T.ReferencedSeriesSequence)) {
        const uid = one(series, T.SeriesInstanceUID);
        for (const ref of items(series, T.ReferencedSOPSequence)) {
          const sop = one(ref, T.ReferencedSOPInstanceUID);
          if (sop && uid) map.set(sop, uid);
        }
      }
    }
  }
  return map;
}

/** A content item named by Referenced Content Item Identifier (PS3.3 C.17.3.2.5): 1-based
 *  positions from the root, the root itself first. */
function byReference(root, ids) {
  let node = root;
  for (const pos of ids.slice(1)) {
    node = children(node)[Number(pos) - 1];
    if (!node) return null;
  }
  return node;
}

function scoordOf(root, num) {
  for (const child of children(num)) {
    if (relationship(child) !== "INFERRED FROM") continue;
    if (valueType(child) === "SCOORD") return child;
    const ids = vals(child, T.ReferencedContentItemIdentifier);
    if (ids.length) {
      const target = byReference(root, ids);
      if (target && valueType(target) === "SCOORD") return target;
    }
  }
  return null;
}

function valueName(num) {
  const concept = conceptName(num);
  for (const child of children(num)) {
    if (valueType(child) === "CODE" && conceptName(child) === DERIVATION) {
      const d = DERIVATIONS.get(codeKey(items(child, T.ConceptCodeSequence)[0]));
      if (d) return d;
    }
  }
  return CONCEPTS.get(concept) ?? DERIVATIONS.get(concept) ?? null;
}

function numValue(num) {
  const mv = items(num, T.MeasuredValueSequence)[0];
  if (!mv) return null;
  const value = number(one(mv, T.FloatingPointValue)) ?? number(one(mv, T.NumericValue));
  if (value === null) return null;
  const unitCode = items(mv, T.MeasurementUnitsCodeSequence)[0];
  const unit = String(one(unitCode, T.CodeValue) ?? "").trim();
  return { value, unit: UNIT_NAMES.get(unit) ?? unit };
}

function imageOf(scoord, seriesOf) {
  const img = children(scoord).find((c) => relationship(c) === "SELECTED FROM" && valueType(c) === "IMAGE");
  const ref = items(img, T.ReferencedSOPSequence)[0];
  const instance = one(ref, T.ReferencedSOPInstanceUID);
  if (!instance) return null;
  const frame = number(one(ref, T.ReferencedFrameNumber));
  return {
    series: seriesOf.get(instance) ?? null,
    instance,
    sop_class: one(ref, T.ReferencedSOPClassUID) ?? null,
    frame: frame ?? 1,
  };
}

function shape(scoord) {
  const type = String(one(scoord, T.GraphicType) ?? "").trim();
  const data = vals(scoord, T.GraphicData).map(Number);
  if (data.length < 2 || data.length % 2 || !data.every(Number.isFinite)) return null;
  const pts = [];
  for (let i = 0; i < data.length; i += 2) pts.push([data[i], data[i + 1]]);
  if (type === "ELLIPSE" && pts.length === 4) return { kind: "ellipse", points: pts };
  if (type !== "POLYLINE") return null;
  const [a, z] = [pts[0], pts[pts.length - 1]];
  const closed = pts.length > 2 && a[0] === z[0] && a[1] === z[1];
  if (closed && pts.length === 5) return { kind: "rectangle", points: pts.slice(0, 4) };
  if (!closed && pts.length === 2) return { kind: "length", points: pts };
  if (!closed && pts.length === 3) return { kind: "angle", points: pts };
  return null;
}

function fromGroup(root, group, seriesOf) {
  let label = null;
  let region = null;
  const nums = [];
  for (const item of children(group)) {
    const vt = valueType(item);
    if (vt === "TEXT" && conceptName(item) === TRACKING_IDENTIFIER) label = one(item, T.TextValue) ?? null;
    else if (vt === "SCOORD" && relationship(item) === "CONTAINS" && !region) region = item;
    else if (vt === "NUM") nums.push(item);
  }
  const values = [];
  let scoord = region;
  for (const num of nums) {
    const name = valueName(num);
    const v = numValue(num);
    if (!name || !v) continue;
    values.push({ name, value: v.value, unit: v.unit });
    if (!scoord) scoord = scoordOf(root, num);
  }
  if (!scoord) return null;
  const geometry = shape(scoord);
  const image = imageOf(scoord, seriesOf);
  if (!geometry || !image) return null;
  const m = { kind: geometry.kind };
  if (label !== null && label !== "") m.label = String(label);
  m.image = image;
  m.points = geometry.points;
  m.values = values;
  return m;
}
