// The login page (against the archive's users) and the session the viewer keeps in this tab.
import { h } from "./dom.js";

const KEY = "dicomvault.token";

export function storedToken() { return sessionStorage.getItem(KEY); }
export function storeToken(token) { if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY); }

/** Show the login form in `root`; resolves with the session once the archive accepts it. */
export function showLogin(root, client, message = "") {
  return new Promise((resolve) => {
    const error = h("p.error", { role: "alert", text: message });
    const form = h("form.login", {
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        const f = Object.fromEntries(new FormData(form));
        try {
          client.setToken(null);
          const s = await client.api("/session", { method: "POST", body: { name: f.name, password: f.password } });
          storeToken(s.token);
          client.setToken(s.token);
          resolve(s);
        } catch (err) {
          error.textContent = err.status === 401 ? "Wrong user name or password." : `Cannot log in: ${err.message}`;
        }
      },
    },
    h("h1", {}, "dicomvault"),
    h("label", {}, "User", h("input", { name: "name", autocomplete: "username", required: true, autofocus: true })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, "Log in"),
    error);
    root.replaceChildren(h("div.login-page", {}, form));
    form.elements.name.focus();
  });
}
