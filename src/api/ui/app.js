// portcullis token page: plain JS, no build step. The login token is kept
// in memory only (never in localStorage); a new PAT is shown once. With
// api.ui.oidc the user signs in at Keycloak (oidc.js); otherwise, or behind
// "Advanced", a login token can be pasted.
"use strict";
(function () {
  const Oidc = window.PortcullisOidc;
  let pasted = null;  // a pasted (or dev) login token
  let viaOidc = false; // signed in through the provider
  let meta = null;    // GET /api/v1/meta
  const WARN_DAYS = 7;
  let renewals = 0;

  function login() { return viaOidc ? Oidc.accessToken() : pasted; }

  const $ = (id) => document.getElementById(id);

  // The provider's answer (`code`, `state`, `error`, `iss`) leaves the
  // address bar and history before anything can fail: copied into memory
  // here, as the script runs, then handled once the provider is known. A
  // page that cannot load its config or reach the provider must not leave
  // a code in the history for whoever opens it next.
  const returned = new URLSearchParams(location.search);
  if (returned.has("code") || returned.has("error") || returned.has("state")) {
    history.replaceState(null, "", location.pathname);
  }

  function status(msg, isError) {
    const s = $("status");
    s.textContent = msg || "";
    s.className = isError ? "error" : "";
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    const bearer = login();
    if (bearer) headers["Authorization"] = "Bearer " + bearer;
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

  // "Last used": when, from which address (as Envoy reported it), and
  // the User-Agent in the tooltip and a muted second line.
  function lastUsedCell(tr, t) {
    const td = cell(tr, "Last used", fmt(t.last_used_at));
    if (t.last_used_at && t.last_used_ip) {
      td.append(" from ");
      const ip = document.createElement("span");
      ip.className = "last-ip";
      ip.textContent = t.last_used_ip;
      td.appendChild(ip);
    }
    if (t.last_used_user_agent) {
      td.title = t.last_used_user_agent;
      const ua = document.createElement("div");
      ua.className = "muted last-ua";
      ua.textContent = t.last_used_user_agent.length > 60
        ? t.last_used_user_agent.slice(0, 59) + "\u2026" : t.last_used_user_agent;
      td.appendChild(ua);
    }
    return td;
  }

  // Admins (api.admin_scope) see every token: GET /api/v1/admin/tokens
  // with the form's filters, newest first, one page at a time.
  let adminCursor = null;
  function adminQuery(cursor) {
    const q = new URLSearchParams();
    const state = $("admin-state").value;
    if (state) q.set("state", state);
    const user = $("admin-user").value.trim();
    if (user) q.set("user", user);
    const name = $("admin-name").value.trim();
    if (name) q.set("name~", name);
    const within = $("admin-expiring").value.trim();
    if (within) q.set("expiring_within", within);
    if (cursor) q.set("cursor", cursor);
    return "/api/v1/admin/tokens?" + q.toString();
  }

  // Only the latest listing draws: a slow answer to an older search must
  // not mix its rows into a newer one.
  let adminSeq = 0;
  async function loadInventory(more) {
    const body = $("all-tokens").querySelector("tbody");
    const seq = ++adminSeq;
    if (!more) adminCursor = null;
    try {
      const page = await api("GET", adminQuery(more ? adminCursor : null));
      if (seq !== adminSeq) return;
      if (!more) body.replaceChildren();
      for (const t of page.tokens) {
        const tr = document.createElement("tr");
        tr.dataset.id = t.id;
        cell(tr, "Owner", t.username || t.user_id);
        cell(tr, "Name", t.name);
        cell(tr, "Scopes", t.scopes.join(" "));
        cell(tr, "Token", t.display_hint);
        cell(tr, "Expires", fmt(t.expires_at));
        lastUsedCell(tr, t);
        const state = t.revoked_at ? "revoked" : (t.active ? "active" : "expired");
        const badge = document.createElement("span");
        badge.className = "badge " + state;
        badge.textContent = state;
        cell(tr, "Status").appendChild(badge);
        body.appendChild(tr);
      }
      adminCursor = page.next_cursor || null;
      $("admin-more").hidden = !adminCursor;
      $("admin-empty").hidden = body.children.length > 0;
    } catch (e) { status("Listing all tokens failed: " + e.message, true); }
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

  // The caller's tokens, and (admins) the inventory with its filters.
  async function refresh() {
    if (meta && meta.caller && meta.caller.is_admin) loadInventory(false);
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
      const exp = cell(tr, "Expires", fmt(t.expires_at));
      const left = (new Date(t.expires_at) - Date.now()) / 86400000;
      if (t.active && left <= WARN_DAYS) {
        const w = document.createElement("span");
        w.className = "badge expiring";
        w.textContent = left < 1 ? "expires today" : "expires in " + Math.ceil(left) + " days";
        exp.append(" ", w);
      }
      lastUsedCell(tr, t);
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

  // Pasted or dev token: use it from now on.
  async function signIn(token) {
    pasted = token;
    viaOidc = false;
    await signedIn();
  }

  function signedOut(reason, isError) {
    pasted = null;
    viaOidc = false;
    meta = null;
    $("create").hidden = true; $("list").hidden = true; $("admin").hidden = true;
    $("all-tokens").querySelector("tbody").replaceChildren();
    $("new-token").textContent = ""; $("new-token-box").hidden = true;
    $("sign-out").hidden = true;
    $("signin").hidden = false;
    $("whoami").textContent = "Not signed in.";
    status(reason, isError);
  }

  async function signedIn() {
    try {
      meta = await api("GET", "/api/v1/meta");
    } catch (e) {
      pasted = null;
      // Still signed in at the provider: offer to sign out there.
      $("sign-out").hidden = !viaOidc;
      status("Sign-in failed: " + e.message, true);
      return;
    }
    const c = meta.caller;
    $("whoami").textContent = "Signed in as " + (c.username || c.subject) + " (" + c.kind + "; scopes: " + (c.scopes.join(" ") || "none") + ")";
    if (!c.can_manage) {
      status("This token cannot manage tokens: it needs the scope " + meta.manage_scope + ".", true);
      $("create").hidden = true; $("list").hidden = true;
      $("sign-out").hidden = !viaOidc;
      return;
    }
    renderScopes();
    $("signin").hidden = true;
    $("sign-out").hidden = false;
    $("create").hidden = false;
    $("list").hidden = false;
    $("admin").hidden = !c.is_admin;
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

  // With api.ui.oidc: "Sign in" goes to the provider; the paste box moves
  // behind "Advanced". Handles the browser's return from the provider.
  async function setUpOidc(oidc) {
    $("advanced").hidden = false;
    $("advanced").appendChild($("token-form"));
    $("sign-in-button").addEventListener("click", () => {
      Oidc.signIn().catch((e) => status(e.message, true));
    });
    try {
      await Oidc.init(oidc, (ok, why) => {
        if (ok) {
          renewals += 1;
          $("renewed").textContent = "Session renewed " + renewals + (renewals === 1 ? " time" : " times") + ", last at " + new Date().toLocaleTimeString() + ".";
          return;
        }
        signedOut(why, true);
      });
    } catch (e) {
      status(e.message, true);
      return;
    }
    // The button only once the provider is known (a click before would
    // have nowhere to go).
    $("oidc-signin").hidden = false;
    try {
      const r = await Oidc.handleReturn(returned);
      if (r === "signed-in") {
        viaOidc = true;
        await signedIn();
      } else if (r === "signed-out") {
        status("Signed out, also of Keycloak.");
      }
    } catch (e) {
      status(e.message, true);
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    try {
      const m = await api("GET", "/api/v1/meta");
      $("dev-form").hidden = !m.dev;
    } catch (_) { /* the page still works with a pasted token */ }
    let oidc = null;
    try {
      const c = await api("GET", "/ui/config.json");
      oidc = c && c.oidc;
    } catch (_) { oidc = null; }

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

    $("sign-out").addEventListener("click", () => {
      if (viaOidc) { Oidc.signOut(); return; }
      signedOut("Signed out.");
    });

    $("refresh").addEventListener("click", () => refresh().catch((e) => status(e.message, true)));
    $("admin-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadInventory(false); });
    $("admin-more").addEventListener("click", () => loadInventory(true));

    if (oidc) await setUpOidc(oidc);
  });
})();
