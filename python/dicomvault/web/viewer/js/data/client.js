// The viewer's only way to the archive: DICOMweb (QIDO-RS, WADO-RS metadata and frames,
// thumbnails) and the JSON API (session, shares, measurements), all with one bearer token.

export const NATIVE_LE = "1.2.840.10008.1.2.1";
// Frames as the raw stored values: the server decodes what the browser cannot (JPEG, J2K, RLE...).
const FRAME_ACCEPT = `multipart/related; type="application/octet-stream"; transfer-syntax=${NATIVE_LE}`;

export class HttpError extends Error {
  constructor(status, message, url) {
    super(message);
    this.status = status;
    this.url = url;
  }
}

export class DicomWebClient {
  constructor({ root = "", token = null } = {}) {
    this.root = root.replace(/\/$/, "");
    this.token = token;
    this.onUnauthorized = null;   // set by the app: show the login page
  }

  setToken(token) { this.token = token; }

  headers(accept) {
    const h = { Accept: accept };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  async request(path, { accept = "application/json", method = "GET", body, signal, type } = {}) {
    const headers = this.headers(accept);
    if (type) headers["Content-Type"] = type;
    const url = this.root + path;
    const rsp = await fetch(url, { method, headers, body, signal });
    if (!rsp.ok) {
      let msg = `${rsp.status} ${rsp.statusText}`;
      try {
        const text = await rsp.text();
        if (text) msg += `: ${text.slice(0, 300)}`;
      } catch { /* the status says enough */ }
      if (rsp.status === 401 && this.onUnauthorized) this.onUnauthorized();
      throw new HttpError(rsp.status, msg, url);
    }
    return rsp;
  }

  async json(path, opts = {}) {
    const rsp = await this.request(path, { accept: "application/dicom+json", ...opts });
    if (rsp.status === 204) return [];
    return rsp.json();
  }

  // --- QIDO-RS ---------------------------------------------------------------------------
  async searchStudies(params, { signal } = {}) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
    }
    return this.json(`/dicom-web/studies?${q}`, { signal });
  }

  async seriesOf(studyUid, { signal } = {}) {
    const inc = ["SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances",
      "SeriesDate", "BodyPartExamined", "FrameOfReferenceUID"].map((k) => `includefield=${k}`).join("&");
    return this.json(`/dicom-web/studies/${enc(studyUid)}/series?${inc}`, { signal });
  }

  // --- WADO-RS -----------------------------------------------------------------------------
  async seriesMetadata(studyUid, seriesUid, { signal } = {}) {
    const instances = await this.json(`/dicom-web/studies/${enc(studyUid)}/series/${enc(seriesUid)}/metadata`, { signal });
    await this.inlineLutData(instances, { signal });
    return instances;
  }

  /** LUT and palette data longer than the archive's bulk data threshold come as a BulkDataURI, but
   *  the display needs them (series.js reads Value or InlineBinary): fetch them and put them inline. */
  async inlineLutData(instances, { signal } = {}) {
    const wanted = [];
    for (const inst of instances) {
      for (const tag of LUT_SEQUENCES) for (const item of inst[tag]?.Value || []) wanted.push(item?.[LUT_DATA]);
      for (const tag of PALETTE_DATA) wanted.push(inst[tag]);
    }
    await Promise.all(wanted.filter((el) => el?.BulkDataURI && !el.Value && !el.InlineBinary).map(async (el) => {
      // As a path on this origin: the archive may name itself otherwise (localhost, 127.0.0.1).
      const path = el.BulkDataURI.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]+/i, "");
      const rsp = await this.request(path, { accept: "application/octet-stream", signal });
      const bytes = new Uint8Array(await rsp.arrayBuffer());
      let bin = "";
      for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      el.InlineBinary = btoa(bin);
    }));
  }

  async studyMetadata(studyUid, { signal } = {}) {
    return this.json(`/dicom-web/studies/${enc(studyUid)}/metadata`, { signal });
  }

  /** Frames of one instance as native little-endian bytes, one ArrayBuffer per frame. */
  async frames(studyUid, seriesUid, sopUid, numbers, { signal } = {}) {
    const path = `/dicom-web/studies/${enc(studyUid)}/series/${enc(seriesUid)}/instances/${enc(sopUid)}` +
      `/frames/${numbers.join(",")}`;
    const rsp = await this.request(path, { accept: FRAME_ACCEPT, signal });
    const body = await rsp.arrayBuffer();
    return splitMultipart(body, rsp.headers.get("content-type") || "");
  }

  /** A series thumbnail (rendered server side) as an object URL. */
  async thumbnail(studyUid, seriesUid, size = 96, { signal } = {}) {
    const path = `/dicom-web/studies/${enc(studyUid)}/series/${enc(seriesUid)}/thumbnail?viewport=${size},${size}`;
    const rsp = await this.request(path, { accept: "image/jpeg", signal });
    return URL.createObjectURL(await rsp.blob());
  }

  // --- JSON API ------------------------------------------------------------------------------
  async api(path, { method = "GET", body, signal } = {}) {
    const rsp = await this.request(`/api${path}`, {
      method, signal, accept: "application/json",
      body: body === undefined ? undefined : JSON.stringify(body),
      type: body === undefined ? undefined : "application/json",
    });
    if (rsp.status === 204) return null;
    return rsp.json();
  }
}

function enc(uid) { return encodeURIComponent(uid); }

// Modality LUT Sequence, VOI LUT Sequence; their LUT Data; Red, Green, Blue Palette Color LUT Data.
const LUT_SEQUENCES = ["00283000", "00283010"];
const LUT_DATA = "00283006";
const PALETTE_DATA = ["00281201", "00281202", "00281203"];

/** The parts of a multipart/related body (RFC 2046) as ArrayBuffers, without copying text. */
export function splitMultipart(buffer, contentType) {
  const m = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!m) return [buffer];   // a single-part answer
  const bytes = new Uint8Array(buffer);
  const delim = new TextEncoder().encode(`--${m[1]}`);
  const find = delimiterFinder(delim);
  const parts = [];
  let pos = find(bytes, 0);
  while (pos >= 0) {
    let start = pos + delim.length;
    if (bytes[start] === 0x2d && bytes[start + 1] === 0x2d) break;   // closing delimiter
    const headEnd = indexOf(bytes, CRLFCRLF, start);
    if (headEnd < 0) break;
    start = headEnd + 4;
    const next = find(bytes, start);
    if (next < 0) break;
    const end = next - 2;   // the CRLF before the delimiter belongs to it
    parts.push(buffer.slice(start, end));
    pos = next;
  }
  return parts;
}

const CRLFCRLF = new Uint8Array([13, 10, 13, 10]);

/** A Boyer-Moore-Horspool search for the boundary delimiter: it steps through a frame's bytes
 *  about a delimiter's length at a time, where a first-byte scan stops at every "-" (one 16-bit
 *  pixel in 256 has one) and the scan cost as much as the copy of the part. */
function delimiterFinder(needle) {
  const m = needle.length;
  const shift = new Uint8Array(256).fill(Math.min(m, 255));
  for (let i = 0; i < m - 1; i++) shift[needle[i]] = Math.min(m - 1 - i, 255);
  const last = needle[m - 1];
  return (hay, from) => {
    for (let i = from + m - 1; i < hay.length; i += shift[hay[i]]) {
      if (hay[i] !== last) continue;
      let j = m - 2;
      let k = i - 1;
      while (j >= 0 && hay[k] === needle[j]) { j--; k--; }
      if (j < 0) return i - m + 1;
    }
    return -1;
  };
}

function indexOf(hay, needle, from) {
  // Frames are large and the delimiter rare: a first-byte scan with indexOf is fast enough.
  const first = needle[0];
  for (let i = hay.indexOf(first, from); i >= 0 && i <= hay.length - needle.length; i = hay.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}
