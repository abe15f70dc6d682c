// portcullis token page: plain JS, no build step. The login token is kept
// in memory only (never in localStorage); a new PAT is shown once.
"use strict";
(function () {
  let login = null;   // the bearer token used for API calls
  let meta = null;    // GET /api/v1/meta

  const $ = (id) => document.getElementById(id);

  function status(msg, isError) {
    const s = $("status");
    s.textContent = msg || "";
    s.className = isError ? "error" : "";
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (login) headers["Authorization"] = "Bearer " + login;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit",
    });
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    if (!resp.ok) {
      const why = data && data.error_description ? data.error_description : ("HTTP " + resp.status);
      const err = new Error(why);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function fmt(ts) {
    if (!ts) return "never";
    const d = new Date(ts);
    return isNaN(d) ? ts : d.toLocaleString();
  }

  function cell(tr, label, text, cls) {
    const td = document.createElement("td");
    td.dataset.label = label;
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function renderScopes() {
    const box = $("scope-boxes");
    box.querySelectorAll(".check").forEach((n) => n.remove());
    const scopes = (meta.caller && meta.caller.offerable_scopes) || [];
    $("no-scopes").hidden = scopes.length > 0;
    scopes.forEach((s, i) => {
      const label = document.createElement("label");
      label.className = "check";
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.name = "scope";
      cb.value = s;
      cb.id = "scope-" + i;
      label.htmlFor = cb.id;
      label.appendChild(cb);
      label.appendChild(document.createTextNode(s));
      box.appendChild(label);
    });
    const days = $("new-days");
    days.max = String(meta.max_lifetime_days);
    days.value = String(meta.default_lifetime_days);
  }

  async function refresh() {
    const tokens = await api("GET", "/api/v1/tokens");
    const body = $("tokens").querySelector("tbody");
    body.replaceChildren();
    $("empty").hidden = tokens.length > 0;
    for (const t of tokens) {
      const tr = document.createElement("tr");
      tr.dataset.id = t.id;
      cell(tr, "Name", t.name);
      cell(tr, "Scopes", t.scopes.join(" "));
      cell(tr, "Token", t.display_hint);
      cell(tr, "Expires", fmt(t.expires_at));
      cell(tr, "Last used", fmt(t.last_used_at));
      const state = t.revoked_at ? "revoked" : (t.active ? "active" : "expired");
      const st = cell(tr, "Status");
      const badge = document.createElement("span");
      badge.className = "badge " + state;
      badge.textContent = state;
      st.appendChild(badge);
      const act = cell(tr, "Actions", undefined, "actions-cell");
      if (t.active) {
        const wrap = document.createElement("div");
        wrap.className = "actions";
        const rot = document.createElement("button");
        rot.type = "button"; rot.className = "secondary rotate";
        rot.textContent = "Rotate";
        rot.setAttribute("aria-label", "Rotate " + t.name);
        rot.addEventListener("click", () => rotate(t));
        const rev = document.createElement("button");
        rev.type = "button"; rev.className = "danger revoke";
        rev.textContent = "Revoke";
        rev.setAttribute("aria-label", "Revoke " + t.name);
        rev.addEventListener("click", () => revoke(t));
        wrap.append(rot, rev);
        act.appendChild(wrap);
      }
      body.appendChild(tr);
    }
  }

  function showNew(created) {
    $("new-token").textContent = created.token;
    $("new-token-box").hidden = false;
    $("new-token-h").focus();
  }

  async function signIn(token) {
    login = token;
    try {
      meta = await api("GET", "/api/v1/meta");
    } catch (e) {
      login = null;
      status("Sign-in failed: " + e.message, true);
      return;
    }
    const c = meta.caller;
    $("whoami").textContent = "Signed in as " + (c.username || c.subject) + " (" + c.kind + "; scopes: " + (c.scopes.join(" ") || "none") + ")";
    if (!c.can_manage) {
      status("This token cannot manage tokens: it needs the scope " + meta.manage_scope + ".", true);
      $("create").hidden = true; $("list").hidden = true;
      return;
    }
    renderScopes();
    $("signin").hidden = true;
    $("sign-out").hidden = false;
    $("create").hidden = false;
    $("list").hidden = false;
    status("Signed in.");
    await refresh();
    $("new-name").focus();
  }

  async function rotate(t) {
    if (!window.confirm("Rotate \u201c" + t.name + "\u201d? The current token stops working now.")) return;
    try {
      const created = await api("POST", "/api/v1/tokens/" + encodeURIComponent(t.id) + "/rotate");
      showNew(created);
      status("Token \u201c" + t.name + "\u201d rotated.");
      await refresh();
    } catch (e) { status("Rotate failed: " + e.message, true); }
  }

  async function revoke(t) {
    if (!window.confirm("Revoke \u201c" + t.name + "\u201d? This cannot be undone.")) return;
    try {
      await api("DELETE", "/api/v1/tokens/" + encodeURIComponent(t.id));
      status("Token \u201c" + t.name + "\u201d revoked.");
      await refresh();
      $("refresh").focus();
    } catch (e) { status("Revoke failed: " + e.message, true); }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    try {
      const m = await api("GET", "/api/v1/meta");
      $("dev-form").hidden = !m.dev;
    } catch (_) { /* the page still works with a pasted token */ }

    $("token-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = $("login-token").value.trim();
      $("login-token").value = "";
      if (v) await signIn(v);
    });

    $("dev-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const r = await api("POST", "/ui/dev-login", { sub: $("dev-user").value.trim(), scopes: $("dev-scopes").value.trim() });
        await signIn(r.token);
      } catch (e) { status("Dev login failed: " + e.message, true); }
    });

    $("create-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const scopes = Array.from(document.querySelectorAll("#scope-boxes input[name=scope]:checked")).map((c) => c.value);
      const body = { name: $("new-name").value, scopes, expires_in_days: parseInt($("new-days").value, 10) };
      const d = $("new-description").value.trim();
      if (d) body.description = d;
      try {
        const created = await api("POST", "/api/v1/tokens", body);
        $("create-form").reset();
        renderScopes();
        showNew(created);
        status("Token \u201c" + created.name + "\u201d created.");
        await refresh();
      } catch (e) { status("Create failed: " + e.message, true); }
    });

    $("copy-token").addEventListener("click", async () => {
      const text = $("new-token").textContent;
      try {
        await navigator.clipboard.writeText(text);
        status("Copied to the clipboard.");
      } catch (_) {
        const r = document.createRange();
        r.selectNodeContents($("new-token"));
        const sel = window.getSelection();
        sel.removeAllRanges(); sel.addRange(r);
        status("Select-all done: press Ctrl+C (or long-press) to copy.");
      }
    });

    $("dismiss-token").addEventListener("click", () => {
      $("new-token").textContent = "";
      $("new-token-box").hidden = true;
      $("new-name").focus();
    });

    $("sign-out").addEventListener("click", () => { login = null; window.location.reload(); });

    $("refresh").addEventListener("click", () => refresh().catch((e) => status(e.message, true)));
  });
})();
