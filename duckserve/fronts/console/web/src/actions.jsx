// An action on a service: a dialog that shows the SQL it will run, runs it on confirmation, shows
// its progress (time so far) and then what SQL answered, a result or the same error as in SQL.
import { useEffect, useState } from "preact/hooks";
import { api, untilDone } from "./api.js";
import { ErrorBox, InstanceBar, Modal, Spinner, SqlBlock, StatusPill, fmt } from "./ui.jsx";

const WORDS = {
  suspend: { title: "Suspend", verb: "Suspend", text: "Its instances stop. A call with AUTO_RESUME on starts them again." },
  resume: { title: "Resume", verb: "Resume", text: "Its instances start; the service answers once they are ready." },
  scale: { title: "Set instances of", verb: "Apply", text: "The service runs between MIN_INSTANCES and MAX_INSTANCES instances." },
  update_version: { title: "Update the model version of", verb: "Update", text: "New instances of the other version start beside the running ones; traffic moves when they are ready." },
  drop: { title: "Drop", verb: "Drop service", text: "Its instances stop and the service is removed. This cannot be undone.", danger: true },
};

export function ActionDialog({ action, service, versions, onClose, onDone }) {
  const words = WORDS[action];
  const [options, setOptions] = useState(() => ({
    min_instances: service.min_instances, max_instances: service.max_instances,
    version: (versions || []).map((v) => v.name).find((v) => v !== service.model_version) || service.model_version,
  }));
  const [preview, setPreview] = useState(null);
  const [previewError, setPreviewError] = useState(null);
  const [operation, setOperation] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    let live = true;
    api.preview(action, service.key, options)
      .then((answer) => { if (live) { setPreview(answer.sql); setPreviewError(null); } })
      .catch((failure) => { if (live) { setPreview(null); setPreviewError(failure); } });
    return () => { live = false; };
  }, [action, options.min_instances, options.max_instances, options.version]);

  const running = operation && operation.state === "RUNNING";
  const finished = operation && operation.state !== "RUNNING";

  const confirm = async () => {
    setError(null);
    try {
      const first = await api.act(action, service.key, options);
      const last = await untilDone(first, api.operation, setOperation);
      if (last.state === "SUCCEEDED") onDone(last);
    } catch (failure) {
      setError(failure);
    }
  };

  const result = finished && operation.state === "SUCCEEDED" && operation.result && operation.result.length
    ? Object.values(operation.result[0]).join(" ") : null;

  return (
    <Modal title={`${words.title} ${service.name}?`} onClose={onClose} footer={
      finished ? <button class="button primary" onClick={onClose}>Close</button> : (
        <>
          <button class="button" onClick={onClose} disabled={running}>Cancel</button>
          <button class={`button ${words.danger ? "danger" : "primary"}`} onClick={confirm}
            disabled={running || !preview} data-testid="confirm-action">
            {running ? <Spinner label={`Running… ${fmt.seconds(operation.seconds)}`} /> : words.verb}
          </button>
        </>
      )}>
      <p>{words.text}</p>
      {action === "scale" ? (
        <div class="form-row">
          <label class="form-field"><span>MIN_INSTANCES</span>
            <input type="number" min="0" name="min_instances" value={options.min_instances} disabled={running || finished}
              onInput={(e) => setOptions({ ...options, min_instances: e.currentTarget.value })} /></label>
          <label class="form-field"><span>MAX_INSTANCES</span>
            <input type="number" min="1" name="max_instances" value={options.max_instances} disabled={running || finished}
              onInput={(e) => setOptions({ ...options, max_instances: e.currentTarget.value })} /></label>
        </div>
      ) : null}
      {action === "update_version" && !(versions || []).length ? (
        <p class="note">This role sees no version of the model: a grant of USAGE on the model lists them.</p>
      ) : null}
      {action === "update_version" && (versions || []).length ? (
        <label class="form-field"><span>Model version (now {service.model_version})</span>
          <select name="version" value={options.version} disabled={running || finished}
            onChange={(e) => setOptions({ ...options, version: e.currentTarget.value })}>
            {(versions || []).map((v) => <option value={v.name}>{v.name}{v.name === service.model_version ? " (running)" : ""}</option>)}
          </select></label>
      ) : null}
      {preview ? <SqlBlock label={finished ? "Ran" : "This runs"} sql={preview + ";"} /> : null}
      <ErrorBox error={previewError} title="This action cannot be written" />
      {running ? (
        <div class="progress-line" data-testid="action-progress"><Spinner /> Running for {fmt.seconds(operation.seconds)} ·
          service <StatusPill status={service.status} /> <InstanceBar ready={service.current_instances} target={service.target_instances} /></div>
      ) : null}
      {finished && operation.state === "SUCCEEDED" ? (
        <div class="success-box" role="status"><StatusPill status="SUCCEEDED" /> {result || "Statement executed successfully."}
          <span class="muted"> · {fmt.seconds(operation.seconds)}</span></div>
      ) : null}
      {finished && operation.state === "FAILED" ? (
        <ErrorBox error={{ message: operation.error, kind: operation.error_kind, sql: operation.sql }} title="SQL refused the action" />
      ) : null}
      <ErrorBox error={error} />
    </Modal>
  );
}
