// The sign-in page: a programmatic access token, or this machine's local trust (the key in the
// link `duckserve ui` printed).
import { useState } from "preact/hooks";
import { api } from "./api.js";
import { ErrorBox, Icon, Spinner } from "./ui.jsx";

export function Logo({ light }) {
  return (
    <span class={`logo ${light ? "logo-light" : ""}`}>
      <svg width="26" height="26" viewBox="0 0 32 32" aria-hidden="true">
        <rect width="32" height="32" rx="8" fill="#f5b82e" />
        <circle cx="14" cy="15" r="7.5" fill="#172033" />
        <path d="M20.5 13.2 L27.5 15.6 L20.5 18 Z" fill="#e8742f" />
        <circle cx="15.6" cy="13" r="1.6" fill="#fff" />
      </svg>
      <span class="logo-word">duck<b>serve</b></span>
    </span>
  );
}

export function SignIn({ localKey, onSignedIn }) {
  const [mode, setMode] = useState(localKey ? "local" : "token");
  const [token, setToken] = useState("");
  const [user, setUser] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const who = mode === "token" ? await api.signInToken(token) : await api.signInLocal(localKey || "", user);
      onSignedIn(who);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="signin-page">
      <div class="signin-card">
        <Logo />
        <h1>Sign in to the console</h1>
        <p class="subtitle">Models, services, logs and metrics of this duckserve account.</p>
        <div class="tabs" role="tablist">
          <button role="tab" class={mode === "token" ? "tab active" : "tab"} onClick={() => setMode("token")}>Access token</button>
          <button role="tab" class={mode === "local" ? "tab active" : "tab"} onClick={() => setMode("local")}>This machine</button>
        </div>
        <form onSubmit={submit}>
          {mode === "token" ? (
            <label class="form-field">
              <span>Programmatic access token</span>
              <input name="token" type="password" autocomplete="off" placeholder="dspat_…" value={token}
                onInput={(e) => setToken(e.currentTarget.value)} autofocus />
              <small>Create one in SQL: <code>ALTER USER me ADD PROGRAMMATIC ACCESS TOKEN console</code></small>
            </label>
          ) : (
            <div>
              <label class="form-field">
                <span>User</span>
                <input name="user" placeholder="ADMIN" value={user} onInput={(e) => setUser(e.currentTarget.value)} />
                <small>{localKey
                  ? "On this machine you are trusted as a local SQL connection is: sign in as any user of the account."
                  : <>Local sign-in needs the link <code>duckserve ui</code> printed (it ends in <code>?key=…</code>).</>}</small>
              </label>
            </div>
          )}
          <ErrorBox error={error} title="Sign-in refused" />
          <button class="button primary wide" type="submit" disabled={busy || (mode === "local" && !localKey)}>
            {busy ? <Spinner label="Signing in…" /> : <><Icon name="key" /> Sign in</>}
          </button>
        </form>
      </div>
      <p class="signin-foot">Every page and action runs SQL as your role: what you see and may do are your grants.</p>
    </div>
  );
}
