// One service: its state, instances, endpoints, model version and functions, with its actions, and
// its logs and metrics in tabs. A build job: its state and its build log.
import { useState } from "preact/hooks";
import { ActionDialog } from "./actions.jsx";
import { api } from "./api.js";
import { LogViewer } from "./logs.jsx";
import { MetricsView } from "./metrics.jsx";
import { modelHref } from "./models.jsx";
import { Card, CopyButton, Empty, ErrorBox, Fields, Icon, InstanceBar, Loading, PageHead, SqlBehind, SqlBlock,
  StatusPill, fmt, usePoll } from "./ui.jsx";

const TABS = [["overview", "Overview"], ["instances", "Instances"], ["logs", "Logs"], ["metrics", "Metrics"]];

function sample(service, fn) {
  const args = (fn.arguments || "").replace(/^[^(]*\(/, "").replace(/\)\s*RETURN.*$/, "");
  const columns = args ? args.split(",").map((a) => a.trim().split(" ")[0].toLowerCase()).join(", ") : "";
  return `SELECT ${service.name.toLowerCase()}!${String(fn.name).toLowerCase()}(${columns}) FROM my_table;`;
}

export function ServicePage({ serviceKey, tab, params }) {
  const { data, error, loading, reload } = usePoll(() => api.service(serviceKey), serviceKey, 2500);
  const [action, setAction] = useState(null);
  const [toast, setToast] = useState(null);
  const current = tab || "overview";
  const base = `#/services/${encodeURIComponent(serviceKey)}`;

  if (loading && !data) return <div class="page"><Loading /></div>;
  if (!data) return <div class="page"><PageHead title={serviceKey} crumbs={[["Services", "#/services"]]} /><ErrorBox error={error} title="The service could not be read" /></div>;
  const { service, instances, endpoints, versions, functions } = data.data;
  const suspended = service.status === "SUSPENDED";
  const ingress = (endpoints || []).find((e) => e.ingress_url);

  return (
    <div class="page">
      <PageHead title={<>{service.name} <StatusPill status={service.status} /></>}
        crumbs={[["Services", "#/services"], [service.name]]}
        subtitle={<>{service.database_name}.{service.schema_name} · model <a href={modelHref(service.model_name)}>{fmt.short(service.model_name)}</a> version <span class="version">{service.model_version}</span> · pool {service.compute_pool}</>}>
        {suspended
          ? <button class="button primary" onClick={() => setAction("resume")} data-action="resume"><Icon name="play" /> Resume</button>
          : <button class="button" onClick={() => setAction("suspend")} data-action="suspend"><Icon name="pause" /> Suspend</button>}
        <button class="button" onClick={() => setAction("scale")} data-action="scale"><Icon name="scale" /> Instances</button>
        <button class="button" onClick={() => setAction("update_version")} data-action="update_version"><Icon name="upgrade" /> Version</button>
        <button class="button danger-outline" onClick={() => setAction("drop")} data-action="drop"><Icon name="trash" /> Drop</button>
      </PageHead>
      {toast ? <div class="toast" role="status"><StatusPill status="SUCCEEDED" /> <code>{toast}</code><button class="icon-button" onClick={() => setToast(null)}>✕</button></div> : null}
      <ErrorBox error={error} title="The latest refresh failed" />
      <nav class="tabs page-tabs">
        {TABS.map(([id, label]) => <a class={current === id ? "tab active" : "tab"} href={id === "overview" ? base : `${base}/${id}`}>{label}</a>)}
      </nav>
      {current === "overview" ? (
        <div class="grid-2">
          <Card title="State">
            <Fields items={[
              ["Status", <StatusPill status={service.status} />],
              ["Instances ready", <InstanceBar ready={service.current_instances} target={service.target_instances} />],
              ["MIN / MAX instances", `${service.min_instances} / ${service.max_instances}`],
              ["Runtime", <span class="tag">{service.runtime}</span>],
              ["Workers per instance", service.num_workers],
              ["Auto-resume", service.auto_resume],
              ["Auto-suspend", service.auto_suspend_secs ? `after ${fmt.number(service.auto_suspend_secs)} s idle` : "never"],
              ["Model update", service.update_status
                ? <span><StatusPill status={service.update_status} /> to <span class="version">{service.target_model_version}</span>
                  {service.update_message ? <div class="muted small">{service.update_message}</div> : null}</span>
                : String(service.is_upgrading) === "true" ? "in progress" : "none"],
              ["Resumed", fmt.when(service.resumed_on)],
              ["Created", fmt.when(service.created_on)],
              ["Owner", service.owner],
            ]} />
          </Card>
          <Card title="Endpoints">
            {ingress ? (
              <div class="endpoint"><span class="muted">Ingress URL</span><code>{ingress.ingress_url}</code><CopyButton text={ingress.ingress_url} /></div>
            ) : <p class="muted">No public endpoint: the service is called from SQL. Create it with <code>ingress_enabled=True</code> for an HTTP URL.</p>}
            <table class="table compact">
              <thead><tr><th>Name</th><th>Port</th><th>Protocol</th><th>Public</th></tr></thead>
              <tbody>{(endpoints || []).map((e) => <tr><td>{e.name}</td><td>{e.port}</td><td>{e.protocol}</td><td>{e.is_public}</td></tr>)}</tbody>
            </table>
            <h4>Image</h4>
            <p class="mono small break">{service.image || "—"}</p>
            {service.build_job ? <p><a href={`#/jobs/${encodeURIComponent(service.build_job)}`}>Build job {service.build_job} and its log <Icon name="arrow" /></a></p> : null}
          </Card>
          <Card title="Functions" class="span-2">
            {functions.length ? (
              <table class="table">
                <thead><tr><th>Function</th><th>Signature</th><th>Call it from SQL</th></tr></thead>
                <tbody>{functions.map((f) => (
                  <tr><td class="strong">{f.name}</td><td class="mono small">{f.arguments}</td>
                    <td><a class="mono small" href={`#/worksheet?sql=${encodeURIComponent(sample(service, f))}`}>{sample(service, f)}</a></td></tr>
                ))}</tbody>
              </table>
            ) : (
              <div>
                <p><span class="chips">{String(service.functions || "").split(",").filter(Boolean).map((f) => <span class="chip mono">{f.toUpperCase()}</span>)}</span></p>
                {data.data.functions_error ? <p class="note">Their signatures are not visible to this role: {data.data.functions_error}</p> : null}
              </div>
            )}
          </Card>
        </div>
      ) : null}
      {current === "instances" ? (
        <Card title={`Instances · ${instances.length}`}>
          {instances.length ? (
            <table class="table" data-testid="instances-table">
              <thead><tr><th>Instance</th><th>Status</th><th>Version</th><th>Message</th><th>Restarts</th><th>Started</th><th>Endpoint</th><th>Process</th><th /></tr></thead>
              <tbody>{instances.map((i) => (
                <tr><td class="strong">{i.instance_id}</td><td><StatusPill status={i.status} /></td>
                  <td><span class="version">{i.model_version || service.model_version}</span></td><td class="muted">{i.message}</td>
                  <td>{i.restart_count ?? 0}{i.last_exit_code !== undefined && i.last_exit_code !== null ? <span class="muted small"> · last exit {i.last_exit_code}{i.last_restart_time ? `, ${fmt.ago(i.last_restart_time)}` : ""}</span> : null}</td>
                  <td title={fmt.when(i.start_time)}>{fmt.ago(i.start_time)}</td><td class="mono small">{i.endpoint || "—"}</td>
                  <td class="mono small">{i.container_id || (i.pid ? `pid ${i.pid}` : "—")}</td>
                  <td><a href={`${base}/logs?instance=${i.instance_id}`}>Log</a></td></tr>
              ))}</tbody>
            </table>
          ) : <Empty title={suspended ? "Suspended: no instance runs" : "No instance yet"} icon="pools">
            {suspended ? <>Resume the service, or call it from SQL with AUTO_RESUME on.</> : "Instances appear here as they start."}</Empty>}
        </Card>
      ) : null}
      {current === "logs" ? <LogViewer fixed={{ key: service.key, name: service.name, kind: "service", instances }}
        initialInstance={params && params.get("instance") ? params.get("instance") : undefined} /> : null}
      {current === "metrics" ? <MetricsView serviceKey={service.key} /> : null}
      <SqlBehind statements={data.sql} />
      {action ? <ActionDialog action={action} service={service} versions={versions} onClose={() => { setAction(null); reload(); }}
        onDone={(op) => { setToast(op.sql); reload(); if (action === "drop") setTimeout(() => { location.hash = "#/services"; }, 800); }} /> : null}
    </div>
  );
}

export function JobPage({ name }) {
  const { data, error, loading } = usePoll(() => api.job(name), name, 3000);
  if (loading && !data) return <div class="page"><Loading /></div>;
  if (!data) return <div class="page"><PageHead title={name} crumbs={[["Services", "#/services"], [name]]} /><ErrorBox error={error} /></div>;
  const job = data.data.job;
  return (
    <div class="page">
      <PageHead title={<>{job.name} <StatusPill status={job.status} /></>} crumbs={[["Services", "#/services"], ["Build jobs"], [job.name]]}
        subtitle={<>Image build for model {fmt.short(job.model_name)} version <span class="version">{job.model_version}</span> on pool {job.compute_pool}</>} />
      <Card title="Job">
        <Fields items={[["Status", <StatusPill status={job.status} />], ["Note", job.comment], ["Started", fmt.when(job.created_on)],
          ["Updated", fmt.when(job.updated_on)], ["Runtime", job.runtime], ["Owner", job.owner]]} />
      </Card>
      <LogViewer fixed={{ key: job.name, name: job.name, kind: "job", instances: [] }} />
      <SqlBlock label="Read this log in SQL" sql={`CALL SYSTEM$GET_SERVICE_LOGS('${job.name}', 0, 'model-build');`} />
    </div>
  );
}


