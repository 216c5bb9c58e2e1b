// The console's shell: sign-in, the sidebar, the role switcher and the hash router.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import "./console.css";
import { api, whenSignedOut } from "./api.js";
import { LogsPage } from "./logs.jsx";
import { MetricsPage } from "./metrics.jsx";
import { ModelPage, ModelsPage } from "./models.jsx";
import { PoolsPage, RepositoriesPage } from "./pools.jsx";
import { JobPage, ServicePage } from "./service.jsx";
import { ServicesPage } from "./services.jsx";
import { Logo, SignIn } from "./signin.jsx";
import { ErrorBox, Icon, Loading } from "./ui.jsx";
import { WorksheetPage } from "./worksheet.jsx";

const NAV = [
  ["services", "Services", "services"],
  ["models", "Models", "models"],
  ["logs", "Logs", "logs"],
  ["metrics", "Metrics", "metrics"],
  ["pools", "Compute pools", "pools"],
  ["repositories", "Image repositories", "images"],
  ["worksheet", "Worksheet", "worksheet"],
];

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts: parts.length ? parts : ["services"], params: new URLSearchParams(search || "") };
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute);
  useEffect(() => {
    const onChange = () => { setRoute(parseRoute()); window.scrollTo(0, 0); };
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

function Page({ route }) {
  const [first, second, third] = route.parts;
  if (first === "services" && second) return <ServicePage serviceKey={second} tab={third} params={route.params} />;
  if (first === "jobs" && second) return <JobPage name={second} />;
  if (first === "models" && second) return <ModelPage modelKey={second} />;
  const pages = { services: ServicesPage, models: ModelsPage, logs: LogsPage, metrics: MetricsPage, pools: PoolsPage,
    repositories: RepositoriesPage, worksheet: WorksheetPage };
  const Chosen = pages[first];
  if (!Chosen) return <div class="page"><ErrorBox error={{ message: `There is no page "${first}".` }} title="Not found" /></div>;
  return <Chosen params={route.params} />;
}

function RoleSwitcher({ who, onChange }) {
  const [error, setError] = useState(null);
  const change = async (role) => {
    setError(null);
    try { onChange(await api.useRole(role)); } catch (failure) { setError(failure); }
  };
  return (
    <div class="role-switcher">
      <label><span class="muted small">Role</span>
        <select name="role" value={who.role} disabled={!!who.restricted_to} onChange={(e) => change(e.currentTarget.value)}
          title={who.restricted_to ? `The token is restricted to role ${who.restricted_to}` : "USE ROLE"}>
          {who.roles.map((r) => <option value={r}>{r}</option>)}
        </select></label>
      {error ? <div class="role-error">{error.message}</div> : null}
    </div>
  );
}

function Shell({ who, setWho }) {
  const route = useRoute();
  const signOut = async () => { try { await api.signOut(); } finally { setWho(null); } };
  return (
    <div class="shell" key={who.role}>
      <aside class="sidebar">
        <a href="#/services" class="brand"><Logo light /></a>
        <nav>
          {NAV.map(([id, label, icon]) => (
            <a href={`#/${id}`} class={route.parts[0] === id || (id === "services" && route.parts[0] === "jobs") ? "nav-item active" : "nav-item"}>
              <Icon name={icon} size={17} /> {label}
            </a>
          ))}
        </nav>
        <div class="sidebar-foot">
          <div class="account-home" title={who.home}>{who.home}</div>
          <div class="muted small">database {who.database}</div>
        </div>
      </aside>
      <div class="main">
        <header class="topbar">
          <div class="topbar-title">{NAV.find(([id]) => id === route.parts[0])?.[1] || "Services"}</div>
          <div class="topbar-right">
            <RoleSwitcher who={who} onChange={setWho} />
            <div class="user" data-testid="signed-in-as"><span class="avatar">{who.user.slice(0, 1)}</span>
              <span><b>{who.user}</b><span class="muted small">{who.method === "LOCAL_TRUST" ? "on this machine" : "access token"}</span></span></div>
            <button class="icon-button" title="Sign out" onClick={signOut}><Icon name="out" /></button>
          </div>
        </header>
        <main><Page route={route} /></main>
      </div>
    </div>
  );
}

function App() {
  const [who, setWho] = useState(undefined);
  const [localKey] = useState(() => {
    const key = new URLSearchParams(location.search).get("key");
    if (key) history.replaceState(null, "", location.pathname + location.hash);   // keep the key out of the history
    return key;
  });
  useEffect(() => {
    whenSignedOut(() => setWho(null));
    api.session().then(setWho).catch(() => setWho(null));
  }, []);
  if (who === undefined) return <Loading label="Opening the console…" />;
  if (who === null) return <SignIn localKey={localKey} onSignedIn={setWho} />;
  return <Shell who={who} setWho={setWho} />;
}

render(<App />, document.getElementById("app"));
