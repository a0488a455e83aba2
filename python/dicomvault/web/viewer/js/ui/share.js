// Share links: a read-only, time-limited, revocable link to one study, made by a user whose
// role allows it (the archive decides and audits; this is only the dialog).
import { h, toast } from "./dom.js";

export function openShareDialog(client, studyUid) {
  const out = h("div.share-result");
  const dialog = h("dialog.share", {},
    h("form", { method: "dialog", onsubmit: async (e) => {
      if (e.submitter?.value !== "create") return;
      e.preventDefault();
      const f = Object.fromEntries(new FormData(e.target));
      try {
        const s = await client.api("/shares", { method: "POST",
          body: { study: studyUid, expires_in: Number(f.days) * 86400, note: f.note || undefined } });
        const link = h("input.share-url", { readOnly: true, value: s.url, size: 60 });
        out.replaceChildren(h("p", {}, `Link valid until ${s.expires}:`), link,
          h("button", { type: "button", onclick: async () => {
            try { await navigator.clipboard.writeText(s.url); toast("Link copied"); } catch { link.select(); }
          } }, "Copy"),
          h("button", { type: "button", onclick: async () => {
            await client.api(`/shares/${encodeURIComponent(s.id)}`, { method: "DELETE" });
            out.replaceChildren(h("p", {}, "Link revoked."));
          } }, "Revoke"));
        link.select();
      } catch (err) {
        out.replaceChildren(h("p.error", {}, err.status === 403 ? "Your role may not share studies." : err.message));
      }
    } },
    h("h2", {}, "Share this study"),
    h("p", {}, "Anyone with the link can view this study only, read-only, until it expires or is revoked."),
    h("label", {}, "Valid for (days) ", h("input", { name: "days", type: "number", min: 1, max: 90, value: 7 })),
    h("label", {}, "Note ", h("input", { name: "note", maxLength: 200, placeholder: "e.g. Dr. Lee, referring" })),
    h("div.buttons", {}, h("button", { value: "create" }, "Create link"), h("button", { value: "close" }, "Close")),
    out));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}
