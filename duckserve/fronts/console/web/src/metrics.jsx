// Metrics: requests, rows, latency percentiles, requests in flight and queued, and instances over
// time, refreshed live, drawn with uPlot.
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { api } from "./api.js";
import { Empty, ErrorBox, Loading, PageHead, SqlBehind, Stat, fmt, usePoll } from "./ui.jsx";

const COLORS = ["#3d6ee8", "#e8833d", "#27a376", "#b44bd6", "#d94f5c"];
const WINDOWS = [[300, "5 min"], [900, "15 min"], [3600, "1 hour"], [6 * 3600, "6 hours"]];

function Chart({ title, unit, times, lines, testid }) {
  const holder = useRef(null);
  const plot = useRef(null);
  const width = () => (holder.current ? holder.current.clientWidth : 400);
  const signature = lines.map((l) => l.label).join("|");

  useEffect(() => {
    if (!holder.current) return undefined;
    const options = {
      width: width(), height: 190,
      cursor: { drag: { x: false, y: false } },
      legend: { show: true, live: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.15, unit === "instances" ? 2 : 1)] } },
      axes: [
        { stroke: "#6b7489", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" }, font: "11px Inter" },
        { stroke: "#6b7489", grid: { stroke: "#eef0f4" }, ticks: { stroke: "#e3e6ec" }, font: "11px Inter", size: 48,
          values: (u, values) => values.map((v) => fmt.number(v, v < 10 ? 2 : 0)) },
      ],
      series: [{}, ...lines.map((l, i) => ({
        label: l.label, stroke: COLORS[i % COLORS.length], width: 1.8, spanGaps: l.spanGaps !== false,
        fill: i === 0 && lines.length === 1 ? COLORS[0] + "1a" : undefined,
        points: { show: false }, paths: l.steps ? uPlot.paths.stepped({ align: 1 }) : undefined,
      }))],
    };
    plot.current = new uPlot(options, [times, ...lines.map((l) => l.values)], holder.current);
    const resize = () => plot.current && plot.current.setSize({ width: width(), height: 190 });
    window.addEventListener("resize", resize);
    return () => { window.removeEventListener("resize", resize); plot.current.destroy(); plot.current = null; };
  }, [signature]);

  useEffect(() => {
    if (plot.current) plot.current.setData([times, ...lines.map((l) => l.values)]);
  }, [times, lines]);

  const latest = lines.map((l) => {
    for (let i = l.values.length - 1; i >= 0; i--) if (l.values[i] !== null && l.values[i] !== undefined) return l.values[i];
    return null;
  });
  return (
    <div class="chart card" data-testid={testid}>
      <header class="chart-head"><h3>{title}</h3><span class="muted small">{unit}</span>
        <span class="chart-now" data-testid={`${testid}-now`}>{fmt.number(latest[0], latest[0] < 10 ? 2 : 0)}</span></header>
      <div ref={holder} class="chart-plot" />
    </div>
  );
}

export function MetricsView({ serviceKey }) {
  const [windowSeconds, setWindow] = useState(300);
  const { data, error, loading } = usePoll(() => api.metrics(serviceKey, windowSeconds), `${serviceKey}|${windowSeconds}`, 2000);
  if (loading && !data) return <Loading label="Reading metrics…" />;
  if (!data) return <ErrorBox error={error} title="Metrics could not be read" />;
  const m = data.data;
  const s = m.series;
  const times = m.t;
  const recent = (values) => {
    const tail = values.slice(-6).filter((v) => v !== null);
    return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : 0;
  };
  return (
    <div class="metrics">
      <div class="toolbar plain">
        <div class="segmented">{WINDOWS.map(([seconds, label]) => (
          <button class={windowSeconds === seconds ? "active" : ""} onClick={() => setWindow(seconds)}>{label}</button>
        ))}</div>
        <span class="muted small"><span class="live-dot" /> Live · every 2 s · {fmt.number(m.step)} s steps · from the {m.source}</span>
      </div>
      <ErrorBox error={error} title="The latest refresh failed" />
      <div class="stats">
        <Stat label="Requests / s (last 30 s)" value={fmt.number(recent(s.requests), 2)} />
        <Stat label="Rows / s" value={fmt.number(recent(s.rows), 0)} />
        <Stat label="p95 latency" value={m.totals.p95 === null ? "—" : `${fmt.number(m.totals.p95, 1)} ms`} hint="over the window" />
        <Stat label="Errors" value={fmt.number(m.totals.errors)} tone={m.totals.errors ? "bad" : undefined} hint="429, 4xx, 5xx answers" />
        <Stat label="Instances ready" value={`${m.instances_now} / ${m.instances_total}`} />
      </div>
      <div class="charts">
        <Chart testid="chart-requests" title="Requests" unit="per second" times={times}
          lines={[{ label: "requests/s", values: s.requests }, { label: "errors/s", values: s.errors }]} />
        <Chart testid="chart-rows" title="Rows" unit="per second" times={times} lines={[{ label: "rows/s", values: s.rows }]} />
        <Chart testid="chart-latency" title="Latency" unit="milliseconds" times={times}
          lines={[{ label: "p50", values: s.p50, spanGaps: false }, { label: "p95", values: s.p95, spanGaps: false }, { label: "p99", values: s.p99, spanGaps: false }]} />
        <Chart testid="chart-load" title="In flight and queued" unit="requests (average)" times={times}
          lines={[{ label: "in flight", values: s.in_flight }, { label: "queued", values: s.queued }]} />
        <Chart testid="chart-instances" title="Instances" unit="instances" times={times}
          lines={[{ label: "ready", values: s.instances, steps: true }]} />
      </div>
      <SqlBehind statements={data.sql} label="SQL behind these charts" />
    </div>
  );
}

export function MetricsPage({ params }) {
  const { data, error, loading } = usePoll(() => api.services(), "metrics-services", 0);
  const [selected, setSelected] = useState(params.get("service") || "");
  const services = data ? data.data.services : [];
  const chosen = services.find((s) => s.key === selected || s.name === selected) || services[0];
  return (
    <div class="page">
      <PageHead title="Metrics" subtitle="Traffic, latency and capacity of a service, refreshed live.">
        {services.length ? (
          <label class="select-field"><span>Service</span>
            <select name="service" value={chosen ? chosen.key : ""} onChange={(e) => setSelected(e.currentTarget.value)}>
              {services.map((s) => <option value={s.key}>{s.name}</option>)}
            </select></label>
        ) : null}
      </PageHead>
      {loading ? <Loading /> : null}
      <ErrorBox error={error} />
      {data && !services.length ? <Empty title="No service to measure" icon="metrics">Metrics appear once a model is deployed as a service.</Empty> : null}
      {chosen ? <MetricsView key={chosen.key} serviceKey={chosen.key} /> : null}
    </div>
  );
}
