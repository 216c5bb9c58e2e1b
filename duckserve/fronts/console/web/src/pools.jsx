// Compute pools (nodes, the services on each) and image repositories (images with size and digest).
import { api } from "./api.js";
import { serviceHref } from "./services.jsx";
import { Card, CopyButton, Empty, ErrorBox, Fields, InstanceBar, Loading, PageHead, SqlBehind, StatusPill, fmt, usePoll } from "./ui.jsx";

function Nodes({ pool }) {
  const cells = [];
  for (let i = 0; i < Math.min(pool.max_nodes, 16); i++) {
    const kind = i < pool.active_nodes ? "active" : i < pool.active_nodes + pool.idle_nodes ? "idle" : "off";
    cells.push(<span class={`node node-${kind}`} title={kind} />);
  }
  return <span class="nodes">{cells}<span class="muted small">{pool.active_nodes} active · {pool.idle_nodes} idle · {pool.min_nodes}–{pool.max_nodes} nodes</span></span>;
}

export function PoolsPage() {
  const { data, error, loading } = usePoll(() => api.pools(), "pools", 5000);
  const pools = data ? data.data.pools : [];
  return (
    <div class="page">
      <PageHead title="Compute pools" subtitle="Where services run: each pool's nodes and the services on it." />
      {loading && !data ? <Loading /> : null}
      <ErrorBox error={error} title="Compute pools could not be listed" />
      {data && !pools.length ? (
        <Empty title="No compute pools" icon="pools">Create one in SQL: <code>CREATE COMPUTE POOL my_pool MIN_NODES = 1 MAX_NODES = 2 INSTANCE_FAMILY = 'CPU_X64_S'</code>.</Empty>
      ) : null}
      <div class="grid-2">{pools.map((p) => (
        <Card title={<>{p.name} <StatusPill status={p.state} /></>} actions={<span class="tag">{p.instance_family}</span>}>
          <Nodes pool={p} />
          <Fields items={[["Runtime", <span class="tag">{p.runtime}</span>], ["Auto-resume", p.auto_resume],
            ["Auto-suspend", `${fmt.number(p.auto_suspend_secs)} s`], ["Status", p.status_message], ["Owner", p.owner]]} />
          {p.services.length ? (
            <table class="table compact">
              <thead><tr><th>Service</th><th>Status</th><th>Instances</th><th>Model</th></tr></thead>
              <tbody>{p.services.map((s) => (
                <tr><td><a href={serviceHref(s.key)}>{s.name}</a></td><td><StatusPill status={s.status} /></td>
                  <td><InstanceBar ready={s.current_instances} target={s.target_instances} /></td>
                  <td>{fmt.short(s.model_name)} <span class="version">{s.model_version}</span></td></tr>
              ))}</tbody>
            </table>
          ) : <p class="muted">No service runs on this pool.</p>}
        </Card>
      ))}</div>
      {data ? <SqlBehind statements={data.sql} /> : null}
    </div>
  );
}

export function RepositoriesPage() {
  const { data, error, loading } = usePoll(() => api.repositories(), "repositories", 10000);
  const repos = data ? data.data.repositories : [];
  return (
    <div class="page">
      <PageHead title="Image repositories" subtitle="The images built for services, with their size and digest." />
      {loading && !data ? <Loading /> : null}
      <ErrorBox error={error} title="Image repositories could not be listed" />
      {data && !repos.length ? <Empty title="No image repositories" icon="images">Create one in SQL: <code>CREATE IMAGE REPOSITORY my_images</code>.</Empty> : null}
      <div class="stack">{repos.map((r) => (
        <Card title={r.name} actions={<span class="muted small">{r.database_name}.{r.schema_name}</span>}>
          <div class="endpoint"><span class="muted">Repository URL</span><code>{r.repository_url}</code><CopyButton text={r.repository_url} /></div>
          {r.images_error ? <ErrorBox error={{ message: r.images_error, kind: "InsufficientPrivileges" }} title="Images are not visible to this role" /> : null}
          {!r.images_error && !r.images.length ? <p class="muted">No image yet: deploying a service builds one here.</p> : null}
          {r.images.length ? (
            <table class="table compact">
              <thead><tr><th>Image</th><th>Tags</th><th>Size</th><th>Digest</th><th>Created</th></tr></thead>
              <tbody>{r.images.map((i) => (
                <tr><td class="mono small break">{i.image_name}</td><td><span class="tag">{i.tags}</span></td>
                  <td>{fmt.bytes(i.size_bytes ?? i.size ?? i.compressed_size)}</td>
                  <td class="mono small" title={i.digest}>{String(i.digest || "—").slice(0, 19)}{i.digest ? "…" : ""} {i.digest ? <CopyButton text={i.digest} /> : null}</td>
                  <td title={fmt.when(i.created_on)}>{fmt.ago(i.created_on)}</td></tr>
              ))}</tbody>
            </table>
          ) : null}
        </Card>
      ))}</div>
      {data ? <SqlBehind statements={data.sql} /> : null}
    </div>
  );
}
