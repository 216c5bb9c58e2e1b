// The worksheet: run SQL (service functions included) and see the result as a table, with the
// time taken and, while service functions run, the rows sent and answered.
import { useRef, useState } from "preact/hooks";
import { api, untilDone } from "./api.js";
import { ErrorBox, Icon, PageHead, Spinner, fmt } from "./ui.jsx";

const NUMERIC = /^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|DOUBLE|FLOAT|REAL|DECIMAL.*|NUMERIC.*)$/;
const STARTER = "-- Ctrl+Enter runs the worksheet\nSHOW SERVICES;";

function Cell({ value }) {
  if (value === null || value === undefined) return <span class="null">NULL</span>;
  if (typeof value === "object") return <span class="mono">{JSON.stringify(value)}</span>;
  if (typeof value === "number") return <span class="num">{value.toLocaleString("en-US", { maximumFractionDigits: 6 })}</span>;
  return String(value);
}

export function WorksheetPage({ params }) {
  const [sql, setSql] = useState(() => params.get("sql") || localStorage.getItem("duckserve.worksheet") || STARTER);
  const [run, setRun] = useState(null);
  const [error, setError] = useState(null);
  const area = useRef(null);
  const running = run && run.state === "RUNNING";

  const start = async () => {
    if (running) return;
    localStorage.setItem("duckserve.worksheet", sql);
    setError(null);
    const element = area.current;
    const selected = element && element.selectionStart !== element.selectionEnd
      ? sql.slice(element.selectionStart, element.selectionEnd) : sql;
    try {
      const first = await api.runSql(selected);
      await untilDone(first, api.worksheetRun, setRun, 250);
    } catch (failure) {
      setError(failure);
    }
  };
  const cancel = async () => { if (run) await api.cancelRun(run.id); };
  const onKey = (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") { event.preventDefault(); start(); }
  };
  const result = run && run.result;

  return (
    <div class="page worksheet">
      <PageHead title="Worksheet" subtitle="Run SQL as your role: DuckDB SQL, duckserve's statements and service functions (svc!method(...)).">
        {running
          ? <button class="button danger-outline" onClick={cancel}><Icon name="stop" /> Cancel</button>
          : null}
        <button class="button primary" onClick={start} disabled={running} data-testid="run-sql">
          {running ? <Spinner label="Running…" /> : <><Icon name="play" /> Run</>}
        </button>
      </PageHead>
      <div class="editor card">
        <textarea ref={area} name="sql" spellcheck={false} value={sql} onInput={(e) => setSql(e.currentTarget.value)} onKeyDown={onKey}
          aria-label="SQL" />
        <div class="editor-foot muted small">Ctrl+Enter runs all, or the selection · statements separated by <code>;</code> run in order</div>
      </div>
      <ErrorBox error={error} />
      {run ? (
        <div class="run-status" data-testid="run-status" data-state={run.state}>
          {running ? <><Spinner /> Running · {fmt.seconds(run.seconds)}</>
            : <><span class={`pill pill-${run.state === "SUCCEEDED" ? "good" : "bad"}`}><span class="dot" />{run.state}</span>
              {" "}{run.state === "SUCCEEDED" ? `${run.total} statement${run.total === 1 ? "" : "s"}` : `${run.statements.length} of ${run.total} statements ran`} · {fmt.seconds(run.seconds)}</>}
          {(run.progress || []).map((p) => (
            <span class="progress-chip">{p.function}: sent {fmt.number(p.rows_sent)} · answered {fmt.number(p.rows_answered)} · in flight {p.in_flight} · batches {fmt.number(p.batches)}{p.retries ? ` · retries ${p.retries}` : ""}</span>
          ))}
        </div>
      ) : null}
      {run && run.error ? <ErrorBox error={{ message: run.error, kind: run.error_kind, sql: run.failed_statement }} title="The statement failed" /> : null}
      {result ? (
        <div class="card result">
          <header class="card-head"><h3>Result <span class="muted small mono result-of">{result.sql}</span></h3>
            <div class="card-actions muted small" data-testid="result-meta">{fmt.number(result.row_count)} row{result.row_count === 1 ? "" : "s"}
              {result.truncated ? ` (first ${fmt.number(result.rows.length)} shown)` : ""} · {fmt.seconds(run.statements.length ? run.statements[run.statements.length - 1].seconds : run.seconds)}</div></header>
          <div class="result-scroll">
            <table class="table result-table" data-testid="result-table">
              <thead><tr><th class="rownum">#</th>{result.columns.map((c) => <th class={NUMERIC.test(c.type) ? "num" : ""}>{c.name}<span class="type">{c.type}</span></th>)}</tr></thead>
              <tbody>{result.rows.map((row, i) => (
                <tr><td class="rownum">{i + 1}</td>{row.map((v) => <td class={typeof v === "number" ? "num" : ""}><Cell value={v} /></td>)}</tr>
              ))}</tbody>
            </table>
          </div>
        </div>
      ) : null}
      {run && run.statements.length > 1 ? (
        <details class="sql-behind" open>
          <summary>Statements run · {run.statements.length}</summary>
          <table class="table compact"><tbody>{run.statements.map((s) => (
            <tr><td class="mono small">{s.sql}</td><td class="num">{s.rows >= 0 ? fmt.number(s.rows) + " rows" : ""}</td><td class="num">{fmt.seconds(s.seconds)}</td></tr>
          ))}</tbody></table>
        </details>
      ) : null}
    </div>
  );
}
