// The console's JSON API. Every answer comes from SQL the server ran for this session; an error
// carries the message SQL gave, its class and the statement.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `the console answered ${status}`);
    this.status = status;
    this.kind = (body && body.kind) || "Error";
    this.sql = (body && body.sql) || null;
  }
}

let onSignedOut = () => {};
export function whenSignedOut(callback) { onSignedOut = callback; }

async function request(method, path, body) {
  const options = { method, headers: { "X-Duckserve-Console": "1" }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(0, { error: "the console server does not answer: is `duckserve ui` still running?", kind: "InterfaceError" });
  }
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    const failure = new ApiError(response.status, data);
    if (response.status === 401 && !path.startsWith("/api/session/")) onSignedOut(failure);
    throw failure;
  }
  return data;
}

const query = (params) => new URLSearchParams(params).toString();

export const api = {
  session: () => request("GET", "/api/session"),
  signInToken: (token) => request("POST", "/api/session/token", { token }),
  signInLocal: (key, user) => request("POST", "/api/session/local", { key, user }),
  signOut: () => request("DELETE", "/api/session"),
  useRole: (role) => request("POST", "/api/session/role", { role }),
  services: () => request("GET", "/api/services"),
  service: (name) => request("GET", `/api/service?${query({ name })}`),
  job: (name) => request("GET", `/api/job?${query({ name })}`),
  logs: (name, instance, container) => request("GET", `/api/logs?${query({ name, instance, container })}`),
  metrics: (name, window) => request("GET", `/api/metrics?${query({ name, window })}`),
  models: () => request("GET", "/api/models"),
  model: (name) => request("GET", `/api/model?${query({ name })}`),
  pools: () => request("GET", "/api/pools"),
  repositories: () => request("GET", "/api/repositories"),
  preview: (action, service, options) => request("POST", "/api/actions", { action, service, options }),
  act: (action, service, options) => request("POST", "/api/actions", { action, service, options, confirm: true }),
  operation: (id) => request("GET", `/api/operations/${id}`),
  runSql: (sql) => request("POST", "/api/worksheet", { sql }),
  worksheetRun: (id) => request("GET", `/api/worksheet/${id}`),
  cancelRun: (id) => request("POST", `/api/worksheet/${id}/cancel`),
};

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Poll an operation or a worksheet run until it finishes; `onTick` sees each state.
export async function untilDone(first, fetchState, onTick, every = 300) {
  let state = first;
  onTick(state);
  while (state.state === "RUNNING") {
    await sleep(every);
    state = await fetchState(state.id);
    onTick(state);
  }
  return state;
}
