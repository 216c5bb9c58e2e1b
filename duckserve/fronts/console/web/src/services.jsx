// Services and jobs: the list, with counts by status, a filter and pages of 100 rows.
import { useMemo, useState } from "preact/hooks";
import { api } from "./api.js";
import { Empty, ErrorBox, Icon, InstanceBar, Loading, PageHead, SqlBehind, Stat, StatusPill, fmt, usePoll } from "./ui.jsx";

const PAGE = 100;

export function serviceHref(key) { return `#/services/${encodeURIComponent(key)}`; }
export function jobHref(name) { return `#/jobs/${encodeURIComponent(name)}`; }

function matches(row, text) {
  if (!text) return true;
  const needle = text.toLowerCase();
  return [row.name, row.model_name, row.model_version, row.compute_pool, row.status, row.database_name, row.schema_name]
    .some((v) => String(v || "").toLowerCase().includes(needle));
}

export function ServicesPage() {
  const { data, error, loading } = usePoll(() => api.services(), "services", 5000);
  const [text, setText] = useState("");
  const [status, setStatus] = useState("ALL");
  const [page, setPage] = useState(0);
  const services = data ? data.data.services : [];
  const jobs = data ? data.data.jobs : [];
  const counts = useMemo(() => {
    const out = {};
    for (const s of services) out[s.status] = (out[s.status] || 0) + 1;
    return out;
  }, [services]);
  const shown = services.filter((s) => (status === "ALL" || s.status === status) && matches(s, text));
  const pages = Math.max(1, Math.ceil(shown.length / PAGE));
  const current = Math.min(page, pages - 1);
  const statuses = ["ALL", ...Object.keys(counts).sort()];

  return (
    <div class="page">
      <PageHead title="Services" subtitle="Models deployed as services, and the jobs that build their images." />
      {loading && !data ? <Loading /> : null}
      <ErrorBox error={error} title="Services could not be listed" />
      {data ? (
        <>
          <div class="stats">
            <Stat label="Services" value={fmt.number(services.length)} />
            <Stat label="Running" value={fmt.number(counts.RUNNING || 0)} tone="good" />
            <Stat label="Suspended" value={fmt.number(counts.SUSPENDED || 0)} />
            <Stat label="Pending or failed" value={fmt.number((counts.PENDING || 0) + (counts.FAILED || 0))}
              tone={(counts.FAILED || 0) ? "bad" : undefined} />
            <Stat label="Build jobs" value={fmt.number(jobs.length)} />
          </div>
          {services.length === 0 ? (
            <Empty title="No services yet" icon="services">
              Deploy a logged model with <code>mv.create_service(service_name="my_svc", service_compute_pool="my_pool",
              image_repo="my_images")</code>, then call it from SQL as <code>my_svc!predict(...)</code>.
            </Empty>
          ) : (
            <div class="card">
              <div class="toolbar">
                <label class="search"><Icon name="search" />
                  <input placeholder="Filter by name, model, pool…" value={text}
                    onInput={(e) => { setText(e.currentTarget.value); setPage(0); }} /></label>
                <div class="segmented">
                  {statuses.map((s) => (
                    <button class={status === s ? "active" : ""} onClick={() => { setStatus(s); setPage(0); }}>
                      {s === "ALL" ? "All" : s.charAt(0) + s.slice(1).toLowerCase()}
                      <span class="count">{s === "ALL" ? services.length : counts[s]}</span>
                    </button>
                  ))}
                </div>
              </div>
              <table class="table" data-testid="services-table">
                <thead><tr><th>Name</th><th>Status</th><th>Model</th><th>Compute pool</th><th>Instances</th>
                  <th>Runtime</th><th>Ingress</th><th>Updated</th></tr></thead>
                <tbody>
                  {shown.slice(current * PAGE, (current + 1) * PAGE).map((s) => (
                    <tr key={s.key}>
                      <td><a class="strong" href={serviceHref(s.key)}>{s.name}</a>
                        <div class="muted small">{s.database_name}.{s.schema_name}</div></td>
                      <td><StatusPill status={s.status} />{String(s.is_upgrading) === "true" ? <span class="chip">updating</span> : null}</td>
                      <td>{fmt.short(s.model_name)} <span class="version">{s.model_version}</span></td>
                      <td>{s.compute_pool}</td>
                      <td><InstanceBar ready={s.current_instances} target={s.target_instances} /></td>
                      <td><span class="tag">{s.runtime}</span></td>
                      <td>{String(s.ingress_enabled) === "true" ? "Public" : <span class="muted">—</span>}</td>
                      <td title={fmt.when(s.updated_on)}>{fmt.ago(s.updated_on)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              {shown.length === 0 ? <div class="table-empty">No service matches this filter.</div> : null}
              {pages > 1 ? (
                <div class="pager">
                  <span>{current * PAGE + 1}–{Math.min(shown.length, (current + 1) * PAGE)} of {shown.length}</span>
                  <button class="button" disabled={current === 0} onClick={() => setPage(current - 1)}>Previous</button>
                  <button class="button" disabled={current >= pages - 1} onClick={() => setPage(current + 1)}>Next</button>
                </div>
              ) : null}
            </div>
          )}
          {jobs.length ? (
            <div class="card">
              <header class="card-head"><h3>Build jobs</h3></header>
              <table class="table">
                <thead><tr><th>Job</th><th>Status</th><th>Model</th><th>Compute pool</th><th>Note</th><th>Started</th></tr></thead>
                <tbody>
                  {jobs.slice(0, 200).map((j) => (
                    <tr key={j.key}>
                      <td><a class="strong" href={jobHref(j.name)}>{j.name}</a></td>
                      <td><StatusPill status={j.status} /></td>
                      <td>{fmt.short(j.model_name)} <span class="version">{j.model_version}</span></td>
                      <td>{j.compute_pool}</td>
                      <td class="muted">{j.comment}</td>
                      <td title={fmt.when(j.created_on)}>{fmt.ago(j.created_on)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          ) : null}
          <SqlBehind statements={data.sql} />
        </>
      ) : null}
    </div>
  );
}
