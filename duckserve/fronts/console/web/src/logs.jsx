// Logs: a service's instance logs (and its ingress proxy's) or a build job's log, following live,
// searchable, per instance.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api } from "./api.js";
import { Empty, ErrorBox, Icon, Loading, PageHead, SqlBlock, usePoll } from "./ui.jsx";

function level(line) {
  if (/ (ERROR|CRITICAL) |Traceback|Error:/.test(line)) return "error";
  if (/ WARNING /.test(line)) return "warn";
  return "";
}

function Highlight({ line, needle }) {
  if (!needle) return line;
  const lower = line.toLowerCase();
  const parts = [];
  let at = 0;
  let found = lower.indexOf(needle, at);
  while (found >= 0) {
    parts.push(line.slice(at, found), <mark>{line.slice(found, found + needle.length)}</mark>);
    at = found + needle.length;
    found = lower.indexOf(needle, at);
  }
  parts.push(line.slice(at));
  return parts;
}

// `fixed`: {key, name, kind: "service" | "job", instances}
export function LogViewer({ fixed, initialInstance }) {
  const isJob = fixed.kind === "job";
  const instances = fixed.instances || [];
  const [instance, setInstance] = useState(initialInstance ?? (instances.length ? String(instances[0].instance_id) : "0"));
  const [container, setContainer] = useState(isJob ? "model-build" : "model-inference");
  const [follow, setFollow] = useState(true);
  const [search, setSearch] = useState("");
  const [matchesOnly, setMatchesOnly] = useState(true);
  const body = useRef(null);
  const key = `${fixed.key}|${instance}|${container}`;
  const { data, error, loading } = usePoll(() => api.logs(fixed.key, instance, container), key, follow ? 1500 : 0);
  const text = data ? data.data.text : "";
  const lines = useMemo(() => text.split("\n").filter((l, i, all) => l || i < all.length - 1), [text]);
  const needle = search.trim().toLowerCase();
  const hits = needle ? lines.filter((l) => l.toLowerCase().includes(needle)).length : 0;
  const shown = lines.map((l, i) => [i + 1, l]).filter(([, l]) => !needle || !matchesOnly || l.toLowerCase().includes(needle));

  useEffect(() => {
    if (follow && body.current) body.current.scrollTop = body.current.scrollHeight;
  }, [text, follow, search]);

  const statement = isJob
    ? `CALL SYSTEM$GET_SERVICE_LOGS('${fixed.name}', 0, 'model-build');`
    : `CALL SYSTEM$GET_SERVICE_LOGS('${fixed.key}', ${instance}, '${container}');`;

  return (
    <div class="card log-card">
      <div class="toolbar">
        {!isJob ? (
          <>
            <label class="select-field"><span>Instance</span>
              <select name="instance" value={instance} onChange={(e) => setInstance(e.currentTarget.value)}>
                {instances.length ? instances.map((i) => <option value={String(i.instance_id)}>Instance {i.instance_id} · {i.status}</option>)
                  : <option value={instance}>Instance {instance}</option>}
              </select></label>
            <label class="select-field"><span>Container</span>
              <select name="container" value={container} onChange={(e) => setContainer(e.currentTarget.value)}>
                <option value="model-inference">model-inference</option>
                <option value="proxy">proxy (ingress)</option>
              </select></label>
          </>
        ) : <span class="tag">model-build</span>}
        <label class="search"><Icon name="search" />
          <input name="log-search" placeholder="Search the log…" value={search} onInput={(e) => setSearch(e.currentTarget.value)} /></label>
        {needle ? <span class="muted small" data-testid="log-hits">{hits} matching line{hits === 1 ? "" : "s"}</span> : null}
        {needle ? <label class="check"><input type="checkbox" checked={matchesOnly} onChange={(e) => setMatchesOnly(e.currentTarget.checked)} /> Only matches</label> : null}
        <span class="spacer" />
        <button class={`button ${follow ? "live" : ""}`} onClick={() => setFollow(!follow)} data-testid="follow">
          {follow ? <><span class="live-dot" /> Following</> : <><Icon name="play" /> Follow</>}
        </button>
      </div>
      <ErrorBox error={error} title="The log could not be read" />
      {loading && !data ? <Loading label="Reading the log…" /> : (
        <div class="log-body" ref={body} data-testid="log-body">
          {shown.length ? shown.map(([n, l]) => (
            <div class={`log-line ${level(l)}`}><span class="ln">{n}</span><span class="lt"><Highlight line={l} needle={needle} /></span></div>
          )) : <div class="log-empty">{needle ? "No line matches." : "The log is empty so far."}</div>}
        </div>
      )}
      <div class="log-foot"><span class="muted small">{lines.length.toLocaleString()} lines · newest last{follow ? " · refreshing every 1.5 s" : ""}</span>
        <code class="small">{statement}</code></div>
    </div>
  );
}

export function LogsPage({ params }) {
  const { data, error, loading } = usePoll(() => api.services(), "logs-services", 0);
  const [selected, setSelected] = useState(params.get("service") || "");
  const everything = data ? [...data.data.services.map((s) => ({ ...s, kind: "service" })), ...data.data.jobs.map((j) => ({ ...j, kind: "job" }))] : [];
  const chosen = everything.find((s) => s.key === selected || s.name === selected) || everything[0];
  const detail = usePoll(() => (chosen && chosen.kind === "service" ? api.service(chosen.key) : Promise.resolve(null)),
    chosen ? chosen.key : "", 5000);

  return (
    <div class="page">
      <PageHead title="Logs" subtitle="Build logs and each instance's service log, following live." >
        {everything.length ? (
          <label class="select-field"><span>Service or job</span>
            <select name="service" value={chosen ? chosen.key : ""} onChange={(e) => setSelected(e.currentTarget.value)}>
              <optgroup label="Services">{everything.filter((s) => s.kind === "service").map((s) => <option value={s.key}>{s.name}</option>)}</optgroup>
              <optgroup label="Build jobs">{everything.filter((s) => s.kind === "job").map((s) => <option value={s.key}>{s.name}</option>)}</optgroup>
            </select></label>
        ) : null}
      </PageHead>
      {loading ? <Loading /> : null}
      <ErrorBox error={error} />
      {data && !everything.length ? <Empty title="No logs yet" icon="logs">Logs appear once a service is deployed: its image build job and each of its instances write one.</Empty> : null}
      {chosen ? (
        <LogViewer key={chosen.key + (detail.data ? "+" : "")}
          fixed={{ key: chosen.kind === "job" ? chosen.name : chosen.key, name: chosen.name, kind: chosen.kind,
            instances: detail.data ? detail.data.data.instances : [] }}
          initialInstance={params.get("instance") || undefined} />
      ) : null}
      {chosen && chosen.kind === "job" ? <SqlBlock label="Read this log in SQL" sql={`CALL SYSTEM$GET_SERVICE_LOGS('${chosen.name}', 0, 'model-build');`} /> : null}
    </div>
  );
}
