// Shared pieces of the console: polling, status pills, tables, errors, empty states, dialogs.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";

// -- data -------------------------------------------------------------------------------------------
// Load `fetcher()` now, again whenever `key` changes, and every `every` ms while the tab is visible.
export function usePoll(fetcher, key, every = 0) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const latest = useRef(0);
  const load = useCallback(async () => {
    const ticket = ++latest.current;
    try {
      const data = await fetcher();
      if (ticket === latest.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (ticket === latest.current) setState((old) => ({ data: old.data, error, loading: false }));
    }
  }, [key]);
  useEffect(() => {
    setState({ data: null, error: null, loading: true });
    load();
    if (!every) return undefined;
    const timer = setInterval(() => { if (!document.hidden) load(); }, every);
    return () => { clearInterval(timer); latest.current++; };
  }, [key, every]);
  return { ...state, reload: load };
}

// -- formatting -------------------------------------------------------------------------------------
export const fmt = {
  number(value, digits = 0) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  },
  seconds(value) {
    if (value === null || value === undefined) return "—";
    if (value < 1) return `${Math.round(value * 1000)} ms`;
    if (value < 60) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
    return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  },
  ago(text) {
    if (!text) return "—";
    const when = new Date(text);
    if (Number.isNaN(when.getTime())) return text;
    const seconds = (Date.now() - when.getTime()) / 1000;
    if (seconds < 45) return "just now";
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return when.toLocaleDateString("en-US", { year: "numeric", month: "short", day: "numeric" });
  },
  when(text) {
    if (!text) return "—";
    const when = new Date(text);
    return Number.isNaN(when.getTime()) ? text : when.toLocaleString("en-US", { dateStyle: "medium", timeStyle: "medium" });
  },
  bytes(value) {
    if (value === null || value === undefined || value === "") return "—";
    let n = Number(value);
    const units = ["B", "KB", "MB", "GB", "TB"];
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit++; }
    return `${n.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  },
  short(name) { return String(name || "").split(".").pop().replace(/^"|"$/g, ""); },
};

// -- icons (24x24 strokes) ---------------------------------------------------------------------------
const PATHS = {
  services: "M4 6h16M4 12h16M4 18h10",
  models: "M12 3l8 4.5v9L12 21l-8-4.5v-9L12 3zM12 12l8-4.5M12 12v9M12 12L4 7.5",
  logs: "M5 4h10l4 4v12H5zM9 12h6M9 16h6M9 8h3",
  metrics: "M4 19V5M4 19h16M8 15l3-4 3 2 5-6",
  pools: "M4 5h16v5H4zM4 14h16v5H4zM8 7.5h.01M8 16.5h.01",
  images: "M4 7l8-4 8 4v10l-8 4-8-4zM4 7l8 4 8-4M12 11v10",
  worksheet: "M8 9l-3 3 3 3M16 9l3 3-3 3M13 6l-2 12",
  play: "M7 5l12 7-12 7z",
  pause: "M8 5v14M16 5v14",
  stop: "M6 6h12v12H6z",
  scale: "M4 12h16M12 4v16",
  trash: "M5 7h14M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3",
  refresh: "M20 11a8 8 0 1 0-2.3 5.7M20 5v6h-6",
  search: "M11 18a7 7 0 1 1 0-14 7 7 0 0 1 0 14zM21 21l-5-5",
  copy: "M9 9h11v11H9zM5 15H4V4h11v1",
  out: "M15 4h5v16h-5M10 8l-4 4 4 4M6 12h10",
  key: "M15 7a4 4 0 1 1-3.5 6L5 19.5 3.5 18l1.5-1.5L3.5 15 5 13.5l1.5 1.5 3-3A4 4 0 0 1 15 7z",
  arrow: "M5 12h14M13 6l6 6-6 6",
  upgrade: "M12 19V5M6 11l6-6 6 6",
  alert: "M12 3l10 18H2zM12 10v5M12 18h.01",
};

export function Icon({ name, size = 16 }) {
  return (
    <svg class="icon" width={size} height={size} viewBox="0 0 24 24" fill="none" stroke="currentColor"
      stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">
      <path d={PATHS[name] || ""} />
    </svg>
  );
}

// -- status -----------------------------------------------------------------------------------------
const TONES = {
  READY: "good", RUNNING: "good", ACTIVE: "good", DONE: "good", SUCCEEDED: "good", SUCCESS: "good",
  PENDING: "busy", STARTING: "busy", RESIZING: "busy", BUILDING: "busy", UPGRADING: "busy", STOPPING: "busy",
  SUSPENDING: "busy", RESUMING: "busy", UPDATING: "busy",
  SUSPENDED: "idle", IDLE: "idle", STOPPED: "idle", DELETED: "idle", CANCELED: "idle",
  FAILED: "bad", ERROR: "bad", INTERNAL_ERROR: "bad", UNKNOWN: "bad",
};

export function StatusPill({ status }) {
  const text = String(status || "UNKNOWN").toUpperCase();
  const tone = TONES[text] || "idle";
  return <span class={`pill pill-${tone}`} data-status={text}><span class="dot" />{text.replace(/_/g, " ")}</span>;
}

// -- blocks -----------------------------------------------------------------------------------------
export function Spinner({ label }) {
  return <span class="spinner-wrap"><span class="spinner" />{label ? <span>{label}</span> : null}</span>;
}

export function ErrorBox({ error, title }) {
  if (!error) return null;
  return (
    <div class="error-box" role="alert">
      <div class="error-title"><Icon name="alert" /> {title || "The statement failed"}
        {error.kind ? <span class="error-kind">{error.kind}</span> : null}</div>
      <div class="error-message">{error.message || String(error)}</div>
      {error.sql ? <div class="error-sql"><span>Statement</span><code>{error.sql}</code></div> : null}
    </div>
  );
}

export function Empty({ icon = "services", title, children }) {
  return (
    <div class="empty">
      <div class="empty-icon"><Icon name={icon} size={28} /></div>
      <div class="empty-title">{title}</div>
      <div class="empty-text">{children}</div>
    </div>
  );
}

export function CopyButton({ text }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try { await navigator.clipboard.writeText(text); setDone(true); setTimeout(() => setDone(false), 1200); } catch (e) { /* no clipboard */ }
  };
  return <button class="icon-button" title="Copy" onClick={copy}>{done ? "Copied" : <Icon name="copy" />}</button>;
}

export function SqlBlock({ sql, label }) {
  return (
    <div class="sql-block">
      {label ? <div class="sql-label">{label}</div> : null}
      <pre><code>{sql}</code></pre>
      <CopyButton text={sql} />
    </div>
  );
}

// The statements a page ran, under the page.
export function SqlBehind({ statements, label = "SQL behind this page" }) {
  if (!statements || !statements.length) return null;
  return (
    <details class="sql-behind">
      <summary>{label} · {statements.length} statement{statements.length === 1 ? "" : "s"}</summary>
      <pre><code>{statements.map((s) => s + ";").join("\n")}</code></pre>
    </details>
  );
}

export function Card({ title, actions, children, class: extra = "" }) {
  return (
    <section class={`card ${extra}`}>
      {title || actions ? <header class="card-head"><h3>{title}</h3><div class="card-actions">{actions}</div></header> : null}
      <div class="card-body">{children}</div>
    </section>
  );
}

export function Stat({ label, value, hint, tone }) {
  return (
    <div class={`stat ${tone ? "stat-" + tone : ""}`}>
      <div class="stat-label">{label}</div>
      <div class="stat-value">{value}</div>
      {hint ? <div class="stat-hint">{hint}</div> : null}
    </div>
  );
}

export function Fields({ items }) {
  return (
    <dl class="fields">
      {items.filter(Boolean).map(([label, value]) => (
        <div class="field"><dt>{label}</dt><dd>{value === null || value === undefined || value === "" ? "—" : value}</dd></div>
      ))}
    </dl>
  );
}

export function Modal({ title, children, onClose, footer, wide }) {
  useEffect(() => {
    const onKey = (event) => { if (event.key === "Escape") onClose(); };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);
  return (
    <div class="modal-backdrop" onClick={(event) => { if (event.target === event.currentTarget) onClose(); }}>
      <div class={`modal ${wide ? "modal-wide" : ""}`} role="dialog" aria-modal="true" aria-label={title}>
        <header class="modal-head"><h2>{title}</h2><button class="icon-button" onClick={onClose} aria-label="Dismiss">✕</button></header>
        <div class="modal-body">{children}</div>
        {footer ? <footer class="modal-foot">{footer}</footer> : null}
      </div>
    </div>
  );
}

export function PageHead({ title, subtitle, children, crumbs }) {
  return (
    <div class="page-head">
      <div>
        {crumbs ? <div class="crumbs">{crumbs.map(([label, href], i) => (
          <span>{href ? <a href={href}>{label}</a> : label}{i < crumbs.length - 1 ? <span class="sep">/</span> : null}</span>
        ))}</div> : null}
        <h1>{title}</h1>
        {subtitle ? <p class="subtitle">{subtitle}</p> : null}
      </div>
      <div class="page-actions">{children}</div>
    </div>
  );
}

export function Loading({ label = "Loading…" }) {
  return <div class="loading"><Spinner label={label} /></div>;
}

export function Chips({ values }) {
  const list = (values || []).filter(Boolean);
  if (!list.length) return <span class="muted">—</span>;
  return <span class="chips">{list.map((v) => <span class="chip">{v}</span>)}</span>;
}

export function InstanceBar({ ready, target }) {
  const total = Math.max(Number(target) || 0, Number(ready) || 0);
  const cells = [];
  for (let i = 0; i < Math.min(total, 12); i++) cells.push(<span class={`cell ${i < ready ? "on" : ""}`} />);
  return (
    <span class="instances" title={`${ready} of ${target} instances ready`}>
      <span class="cells">{cells}</span><span class="count">{ready}/{target}</span>
    </span>
  );
}
