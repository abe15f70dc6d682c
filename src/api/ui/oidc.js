// portcullis token page: signing in at the OpenID Provider (Keycloak) as an
// in-page public client. Authorization code + PKCE (S256); `state` and
// `nonce` are checked on return, and so is `iss` when the provider sends it
// (RFC 9207). The tokens live in this closure only: never in localStorage,
// sessionStorage, a cookie or the address bar. Only a sign-in in progress
// keeps its one-time state, nonce and PKCE verifier in sessionStorage for
// the round trip to the provider; they are removed when the browser comes
// back, whatever came back. The ID token comes straight from the token
// endpoint over TLS, so its claims are checked but not its signature
// (OpenID Connect Core 3.1.3.7); the API verifies every access token.
"use strict";
window.PortcullisOidc = (function () {
  const PENDING = "portcullis.oidc.pending";
  const LOGOUT = "portcullis.oidc.logout";
  const MAX_PENDING_MS = 10 * 60 * 1000;
  let cfg = null;
  let disco = null;
  let tokens = null;   // { access, refresh, id, sub, expiresAt }
  let timer = null;
  let listener = function () {};

  function SignInError(message) {
    const e = new Error(message);
    e.name = "SignInError";
    return e;
  }

  function b64url(bytes) {
    let s = "";
    bytes.forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function random() {
    const a = new Uint8Array(32);
    crypto.getRandomValues(a);
    return b64url(a);
  }

  async function s256(v) {
    const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(v));
    return b64url(new Uint8Array(d));
  }

  function redirectUri() { return cfg.redirect_uri || (location.origin + "/ui"); }
  function postLogoutUri() { return cfg.post_logout_redirect_uri || redirectUri(); }

  // Reads the provider's discovery document; its endpoints must be on the
  // issuer's origin (the only one the page's CSP lets it connect to).
  async function init(config, onChange) {
    cfg = config;
    listener = onChange || listener;
    if (!window.crypto || !crypto.subtle) {
      throw SignInError("Signing in needs a secure page: https, or http on localhost.");
    }
    const url = cfg.issuer.replace(/\/$/, "") + "/.well-known/openid-configuration";
    let r;
    try {
      r = await fetch(url, { credentials: "omit", cache: "no-store" });
    } catch (_) {
      throw SignInError("Cannot reach the sign-in service at " + cfg.issuer + ".");
    }
    if (!r.ok) throw SignInError("The sign-in service at " + cfg.issuer + " answered HTTP " + r.status + ".");
    disco = await r.json();
    if (disco.issuer !== cfg.issuer) {
      throw SignInError("The sign-in service calls itself " + disco.issuer + ", not " + cfg.issuer + ".");
    }
    const origin = new URL(cfg.issuer).origin;
    for (const k of ["authorization_endpoint", "token_endpoint"]) {
      if (typeof disco[k] !== "string" || new URL(disco[k]).origin !== origin) {
        throw SignInError("The sign-in service's " + k + " is not on " + origin + ".");
      }
    }
    const methods = disco.code_challenge_methods_supported;
    if (Array.isArray(methods) && !methods.includes("S256")) {
      throw SignInError("The sign-in service does not offer PKCE S256.");
    }
  }

  // Sends the browser to the provider's login page.
  async function signIn() {
    const p = { state: random(), nonce: random(), verifier: random(), redirect_uri: redirectUri(), at: Date.now() };
    const q = new URLSearchParams({
      response_type: "code",
      client_id: cfg.client_id,
      redirect_uri: p.redirect_uri,
      scope: cfg.scopes.join(" "),
      state: p.state,
      nonce: p.nonce,
      code_challenge: await s256(p.verifier),
      code_challenge_method: "S256",
    });
    sessionStorage.setItem(PENDING, JSON.stringify(p));
    location.assign(disco.authorization_endpoint + "?" + q.toString());
  }

  function claims(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bin = atob(part + "===".slice((part.length + 3) % 4));
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      throw SignInError("The sign-in service sent an unreadable ID token.");
    }
  }

  // ID token checks (OpenID Connect Core 3.1.3.7): iss, aud/azp, exp,
  // and the nonce of this sign-in (`nonce` null on a refresh).
  function checkIdToken(idToken, nonce) {
    if (typeof idToken !== "string") throw SignInError("The sign-in service sent no ID token (is openid among the scopes?).");
    const c = claims(idToken);
    const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
    if (c.iss !== cfg.issuer) throw SignInError("The ID token is from " + c.iss + ", not " + cfg.issuer + ".");
    if (!aud.includes(cfg.client_id) || (aud.length > 1 && c.azp !== cfg.client_id)) {
      throw SignInError("The ID token is not meant for this page (aud/azp).");
    }
    if (typeof c.exp !== "number" || c.exp * 1000 <= Date.now()) throw SignInError("The ID token has expired.");
    if (nonce !== null && c.nonce !== nonce) throw SignInError("The ID token does not answer this sign-in (nonce does not match).");
    if (tokens && tokens.sub && c.sub !== tokens.sub) throw SignInError("The session now belongs to someone else; sign in again.");
    return c;
  }

  async function tokenRequest(params) {
    const body = new URLSearchParams(Object.assign({ client_id: cfg.client_id }, params));
    let r;
    try {
      r = await fetch(disco.token_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
        body: body.toString(),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (_) {
      throw SignInError("Cannot reach the sign-in service's token endpoint.");
    }
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (!r.ok || !data || typeof data.access_token !== "string") {
      const why = data && data.error ? data.error + (data.error_description ? " (" + data.error_description + ")" : "") : "HTTP " + r.status;
      throw SignInError("The sign-in service refused: " + why + ".");
    }
    return data;
  }

  // Keeps new tokens and plans the renewal: a fifth of the lifetime (at
  // most a minute) before the access token expires.
  function accept(t, c) {
    const life = Math.max(1, Number(t.expires_in) || 60) * 1000;
    tokens = {
      access: t.access_token,
      refresh: typeof t.refresh_token === "string" ? t.refresh_token : (tokens && tokens.refresh),
      id: t.id_token || (tokens && tokens.id),
      sub: c ? c.sub : tokens && tokens.sub,
      expiresAt: Date.now() + life,
    };
    clearTimeout(timer);
    const lead = Math.min(60000, life / 5);
    timer = setTimeout(renew, Math.max(1000, life - lead));
  }

  async function renew() {
    if (!tokens) return;
    if (!tokens.refresh) { end("Your session has expired; sign in again."); return; }
    try {
      const t = await tokenRequest({ grant_type: "refresh_token", refresh_token: tokens.refresh });
      accept(t, t.id_token ? checkIdToken(t.id_token, null) : null);
      listener(true, "renewed");
    } catch (_) {
      end("Your session has ended; sign in again.");
    }
  }

  function end(reason) {
    clearTimeout(timer);
    tokens = null;
    listener(false, reason);
  }

  // Handles the browser's return from the provider: the sign-in answer
  // (`code` or `error`, with `state`), or the end of a sign-out (`state`
  // only), from `q`: the page's query as it was on load (app.js copies it
  // and clears the address bar first thing). Returns "signed-in",
  // "signed-out" or null (nothing to handle); throws SignInError when an
  // answer is refused.
  async function handleReturn(q) {
    const isAnswer = q.has("code") || q.has("error");
    if (!isAnswer && !q.has("state")) return null;
    if (!isAnswer) {
      const want = sessionStorage.getItem(LOGOUT);
      sessionStorage.removeItem(LOGOUT);
      return want && want === q.get("state") ? "signed-out" : null;
    }
    const raw = sessionStorage.getItem(PENDING);
    // One answer per sign-in: a replayed or forged one finds nothing.
    sessionStorage.removeItem(PENDING);
    let p = null;
    try { p = JSON.parse(raw); } catch (_) { p = null; }
    if (!p || typeof p.state !== "string" || q.get("state") !== p.state) {
      throw SignInError("This sign-in answer was not asked for by this page (its state does not match), so it was ignored. Sign in again.");
    }
    if (Date.now() - p.at > MAX_PENDING_MS) throw SignInError("The sign-in took too long; sign in again.");
    if (q.has("error")) {
      throw SignInError(q.get("error") === "access_denied"
        ? "Sign-in was cancelled."
        : "Sign-in failed: " + (q.get("error_description") || q.get("error")) + ".");
    }
    if (q.has("iss") && q.get("iss") !== cfg.issuer) {
      throw SignInError("The sign-in answer names another issuer (" + q.get("iss") + "), so it was ignored.");
    }
    const t = await tokenRequest({
      grant_type: "authorization_code",
      code: q.get("code"),
      redirect_uri: p.redirect_uri,
      code_verifier: p.verifier,
    });
    tokens = null;
    accept(t, checkIdToken(t.id_token, p.nonce));
    return "signed-in";
  }

  // RP-initiated logout: ends the provider's session too, then comes back.
  function signOut() {
    const hint = tokens && tokens.id;
    clearTimeout(timer);
    tokens = null;
    if (!disco || typeof disco.end_session_endpoint !== "string") {
      listener(false, "Signed out of this page.");
      return;
    }
    const state = random();
    sessionStorage.setItem(LOGOUT, state);
    const q = new URLSearchParams({ client_id: cfg.client_id, post_logout_redirect_uri: postLogoutUri(), state: state });
    if (hint) q.set("id_token_hint", hint);
    location.assign(disco.end_session_endpoint + "?" + q.toString());
  }

  return {
    init: init,
    signIn: signIn,
    handleReturn: handleReturn,
    signOut: signOut,
    accessToken: function () { return tokens ? tokens.access : null; },
    expiresAt: function () { return tokens ? tokens.expiresAt : null; },
  };
})();
