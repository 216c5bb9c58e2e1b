// Models: the registry's models, their versions, functions with signatures, dependencies, where
// each version can run, and the services using it.
import { api } from "./api.js";
import { serviceHref } from "./services.jsx";
import { Card, Chips, Empty, ErrorBox, Fields, Loading, PageHead, SqlBehind, fmt, usePoll } from "./ui.jsx";

export function modelHref(key) { return `#/models/${encodeURIComponent(key)}`; }

export function ModelsPage() {
  const { data, error, loading } = usePoll(() => api.models(), "models", 10000);
  const models = data ? data.data.models : [];
  return (
    <div class="page">
      <PageHead title="Models" subtitle="The model registry: every logged model and its versions." />
      {loading && !data ? <Loading /> : null}
      <ErrorBox error={error} title="Models could not be listed" />
      {data && !models.length ? (
        <Empty title="No models yet" icon="models">
          Log one from Python: <code>Registry(conn).log_model(model, model_name="forecast", sample_input_data=X)</code>,
          or in SQL: <code>CREATE MODEL m WITH VERSION v1 FROM '/path/to/mlflow_model'</code>.
        </Empty>
      ) : null}
      {models.length ? (
        <div class="card">
          <table class="table" data-testid="models-table">
            <thead><tr><th>Model</th><th>Type</th><th>Default version</th><th>Versions</th><th>Owner</th><th>Created</th></tr></thead>
            <tbody>{models.map((m) => (
              <tr><td><a class="strong" href={modelHref(m.key)}>{m.name}</a><div class="muted small">{m.database_name}.{m.schema_name}{m.comment ? ` · ${m.comment}` : ""}</div></td>
                <td><span class="tag">{m.model_type || "—"}</span></td><td><span class="version">{m.default_version_name}</span></td>
                <td><Chips values={String(m.versions || "").split(",")} /></td><td>{m.owner}</td>
                <td title={fmt.when(m.created_on)}>{fmt.ago(m.created_on)}</td></tr>
            ))}</tbody>
          </table>
        </div>
      ) : null}
      {data ? <SqlBehind statements={data.sql} /> : null}
    </div>
  );
}

function parseJson(text) {
  try { return typeof text === "string" ? JSON.parse(text) : text || {}; } catch (e) { return {}; }
}

function Version({ model, version }) {
  const deps = parseJson(version.dependencies);
  const services = String(version.services || "").split(",").filter(Boolean);
  const runs = String(version.runnable_in || "").split(",").filter(Boolean);
  return (
    <Card title={<>Version <span class="version">{version.name}</span> {version.is_default_version === "true" ? <span class="chip chip-accent">default</span> : null}</>}
      actions={<span class="muted small">{fmt.when(version.created_on)}</span>}>
      <Fields items={[
        ["Type", <span class="tag">{version.model_type}</span>],
        ["Python", version.python_version],
        ["Runs in", <span class="chips">{runs.map((r) => <span class="chip chip-run">{r === "WAREHOUSE" ? "Warehouse" : r === "SPCS" ? "Service" : r}</span>)}</span>],
        version.warehouse_reason ? ["Not in the warehouse", <span class="muted">{version.warehouse_reason}</span>] : null,
        ["Services using it", services.length ? <span class="chips">{services.map((s) => <a class="chip" href={serviceHref(s)}>{s.split(".").pop()}</a>)}</span> : <span class="muted">none</span>],
        ["Conda dependencies", <Chips values={deps.conda} />],
        ["pip requirements", <Chips values={deps.pip} />],
        version.comment ? ["Comment", version.comment] : null,
      ]} />
      <table class="table compact">
        <thead><tr><th>Function</th><th>Signature</th><th>Method</th></tr></thead>
        <tbody>{(version.function_list || []).map((f) => (
          <tr><td class="strong">{f.name}</td><td class="mono small">{f.arguments}</td><td class="mono small">{f.target_method}</td></tr>
        ))}</tbody>
      </table>
      <p class="muted small">In SQL: <code>{`SELECT MODEL(${model.name}, ${version.name})!${String((version.function_list || [{ name: "predict" }])[0].name).toLowerCase()}(...) FROM my_table`}</code></p>
    </Card>
  );
}

export function ModelPage({ modelKey }) {
  const { data, error, loading } = usePoll(() => api.model(modelKey), modelKey, 10000);
  if (loading && !data) return <div class="page"><Loading /></div>;
  if (!data) return <div class="page"><PageHead title={modelKey} crumbs={[["Models", "#/models"]]} /><ErrorBox error={error} title="The model could not be read" /></div>;
  const { model, versions } = data.data;
  return (
    <div class="page">
      <PageHead title={model.name} crumbs={[["Models", "#/models"], [model.name]]}
        subtitle={<>{model.database_name}.{model.schema_name} · {versions.length} version{versions.length === 1 ? "" : "s"} · default <span class="version">{model.default_version_name}</span>{model.comment ? ` · ${model.comment}` : ""}</>} />
      <ErrorBox error={error} title="The latest refresh failed" />
      <div class="stack">{versions.map((v) => <Version model={model} version={v} />)}</div>
      <SqlBehind statements={data.sql} />
    </div>
  );
}
