// The API as the UI calls it: same origin, the session cookie (HttpOnly: this code never sees
// a token), `X-Sotp-UI` on every call (the server refuses cookie-authenticated writes without
// it, so another site cannot forge one), and for the admin the tenant it acts for.

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string, public details?: unknown) {
    super(message);
  }
}

export interface Session {
  principal: "admin" | "tenant";
  tenant: string | null;
  scopes: string[];
  expires_ms: number | null;
  /** May see the platform's health (the admin, or the platform tenant's read tokens). */
  platform?: boolean;
}

let actingFor: string | null = sessionStorage.getItem("sotp.tenant");
const listeners = new Set<(message: string) => void>();

/** The tenant the admin acts for (a tenant token's own tenant needs none). */
export function setActingFor(tenant: string | null) {
  actingFor = tenant;
  if (tenant) sessionStorage.setItem("sotp.tenant", tenant);
  else sessionStorage.removeItem("sotp.tenant");
}
export function getActingFor() {
  return actingFor;
}

/** Called when the session is gone (expired, revoked, signed out elsewhere). */
export function onSignedOut(f: (message: string) => void) {
  listeners.add(f);
  return () => listeners.delete(f);
}

async function request(method: string, path: string, body?: BodyInit | object, raw = false): Promise<Response> {
  const headers: Record<string, string> = { "X-Sotp-UI": "1" };
  if (actingFor) headers["X-Sotp-Tenant"] = actingFor;
  let payload: BodyInit | undefined;
  if (body instanceof FormData || typeof body === "string") payload = body;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "network", `cannot reach SOTP: ${(e as Error).message}`);
  }
  if (response.ok || raw) return response;
  let code = "error";
  let message = `${method} ${path}: HTTP ${response.status}`;
  let details: unknown;
  try {
    const j = await response.json();
    code = j.error ?? code;
    message = j.detail ?? message;
    details = j;
  } catch {
    /* not JSON */
  }
  if (response.status === 401 && !path.startsWith("/ui/session")) {
    listeners.forEach((f) => f(message));
  }
  throw new ApiError(response.status, code, message, details);
}

export async function get<T>(path: string): Promise<T> {
  return (await request("GET", `/v1${path}`)).json();
}
export async function getText(path: string): Promise<string> {
  return (await request("GET", `/v1${path}`)).text();
}
export async function post<T>(path: string, body?: BodyInit | object): Promise<T> {
  const r = await request("POST", `/v1${path}`, body ?? {});
  return r.status === 204 ? (undefined as T) : r.json();
}
export async function put<T>(path: string, body: BodyInit | object): Promise<T> {
  return (await request("PUT", `/v1${path}`, body)).json();
}
export async function del(path: string): Promise<void> {
  await request("DELETE", `/v1${path}`);
}
export async function health(): Promise<boolean> {
  try {
    return (await fetch("/healthz")).ok;
  } catch {
    return false;
  }
}

/** The session, or why there is none (`reason`: a session the browser had has ended). */
export async function session(): Promise<{ session: Session | null; reason?: string }> {
  const r = await request("GET", "/ui/session");
  const j = await r.json();
  return j.signed_in ? { session: j } : { session: null, reason: j.reason };
}
export async function signIn(token: string): Promise<Session> {
  return (await request("POST", "/ui/session", { token })).json();
}
export async function signOut(): Promise<void> {
  await request("DELETE", "/ui/session", undefined, true);
  setActingFor(null);
}
