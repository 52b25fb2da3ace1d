// SOTP's web UI: sign-in, then pages over the API (served by `sotp run` at /, assets under
// /ui/, all inside the binary). Routing is by the URL's hash so any page can be reloaded
// or linked without server routes.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import * as api from "./api";
import { Overview } from "./pages/overview";
import { Incidents, IncidentPage } from "./pages/incidents";
import { Components, ComponentPage } from "./pages/components";
import { Devices } from "./pages/devices";
import { Compliance, ComplianceDevice } from "./pages/compliance";
import { LazyEditor, Rules } from "./pages/rules";
import { Flows } from "./pages/flows";
import { Backups, BackupPage } from "./pages/backups";
import { SignIn } from "./pages/signin";
import { Platform } from "./pages/platform";
import { message, useLoad } from "./util";
import "./app.css";

function useRoute(): string[] {
  const parse = () => (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  const [route, setRoute] = useState(parse());
  useEffect(() => {
    const f = () => setRoute(parse());
    addEventListener("hashchange", f);
    return () => removeEventListener("hashchange", f);
  }, []);
  return route;
}

const PAGES: [string, string][] = [
  ["overview", "Overview"],
  ["compliance", "Compliance"],
  ["rules", "Rules"],
  ["incidents", "Incidents"],
  ["flows", "Flows"],
  ["components", "Components"],
  ["devices", "Devices"],
  ["backups", "Backups"],
];

function App() {
  const [session, setSession] = useState<api.Session | null | undefined>(undefined);
  const [notice, setNotice] = useState<string | null>(null);
  useEffect(() => {
    api.session().then(
      (s) => {
        if (s.reason) setNotice(`Signed out: ${s.reason}`);
        setSession(s.session);
      },
      (e) => {
        setNotice(message(e));
        setSession(null);
      },
    );
    return api.onSignedOut((m) => {
      setNotice(`Signed out: ${m}`);
      setSession(null);
    });
  }, []);
  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null)
    return (
      <SignIn
        notice={notice}
        onSignedIn={(s) => {
          setNotice(null);
          setSession(s);
        }}
      />
    );
  return <Shell session={session} onSignOut={() => api.signOut().then(() => setSession(null))} />;
}

function Shell(props: { session: api.Session; onSignOut: () => void }) {
  const route = useRoute();
  const { session } = props;
  const [tenant, setTenant] = useState(session.principal === "tenant" ? session.tenant : api.getActingFor());
  const [menu, setMenu] = useState(false);
  // The platform's health is the admin's own page, for no tenant in particular.
  const needsTenant = session.principal === "admin" && !tenant && route[0] !== "platform";
  return (
    <div class="shell">
      <header class="top">
        <a class="brand" href="#/overview">SOTP</a>
        <button class="menu-toggle" aria-expanded={menu} aria-controls="nav" onClick={() => setMenu(!menu)}>
          Menu
        </button>
        <nav id="nav" class={menu ? "open" : ""} aria-label="Pages">
          {[...PAGES, ...(session.platform ? [["platform", "Platform"]] : [])].map(([id, label]) => (
            <a href={`#/${id}`} aria-current={route[0] === id ? "page" : undefined} onClick={() => setMenu(false)}>
              {label}
            </a>
          ))}
        </nav>
        <div class="who">
          {session.principal === "admin" ? (
            <TenantSwitch
              tenant={tenant}
              onChange={(t) => {
                api.setActingFor(t);
                setTenant(t);
              }}
            />
          ) : (
            <span title="your tenant">{session.tenant}</span>
          )}
          <button onClick={props.onSignOut}>Sign out</button>
        </div>
      </header>
      <main key={`${tenant}`}>
        {needsTenant ? <p class="notice">Choose a tenant to act for.</p> : <Page route={route} />}
      </main>
    </div>
  );
}

function TenantSwitch(props: { tenant: string | null; onChange: (t: string | null) => void }) {
  const tenants = useLoad(() => api.get<{ tenants: { id: string }[] }>("/tenants"));
  return (
    <label>
      Tenant{" "}
      <select value={props.tenant ?? ""} onChange={(e) => props.onChange((e.currentTarget as HTMLSelectElement).value || null)}>
        <option value="">—</option>
        {(tenants.data?.tenants ?? []).map((t) => (
          <option value={t.id}>{t.id}</option>
        ))}
      </select>
    </label>
  );
}

function Page(props: { route: string[] }) {
  const [page, id] = props.route;
  switch (page) {
    case "overview":
      return <Overview />;
    case "compliance":
      return id ? <ComplianceDevice device={id} /> : <Compliance />;
    case "rules":
      return id ? <LazyEditor file={id} /> : <Rules />;
    case "incidents":
      return id ? <IncidentPage id={id} /> : <Incidents />;
    case "components":
      return id ? <ComponentPage name={id} /> : <Components />;
    case "devices":
      return <Devices />;
    case "flows":
      return <Flows />;
    case "platform":
      return <Platform />;
    case "backups":
      return id ? <BackupPage device={id} /> : <Backups />;
    default:
      return <p class="error" role="alert">No page “{page}”.</p>;
  }
}

render(<App />, document.getElementById("app")!);
