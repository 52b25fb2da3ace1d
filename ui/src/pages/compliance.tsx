import { useMemo, useState } from "preact/hooks";
import * as api from "../api";
import { LineChart } from "../chart";
import type { AuditInfo, DeviceReport, Report, RuleResult } from "../types";
import { Badge, Loaded, VirtualTable, ago, message, time, useLoad } from "../util";

async function latest(): Promise<{ audits: AuditInfo[]; report: Report | null }> {
  const { audits } = await api.get<{ audits: AuditInfo[] }>("/compliance/audits");
  if (audits.length === 0) return { audits, report: null };
  return { audits, report: await api.get<Report>("/compliance/audits/latest") };
}

/** The latest audit per device and per rule, the trend over runs, and running one. */
export function Compliance() {
  const data = useLoad(latest);
  const [tab, setTab] = useState<"devices" | "rules">("devices");
  const [running, setRunning] = useState<string | null>(null);
  const run = async () => {
    setRunning("Auditing…");
    try {
      await api.post("/compliance/audits?wait=true");
      setRunning(null);
      data.reload();
    } catch (e) {
      setRunning(message(e));
    }
  };
  return (
    <>
      <h1>Compliance</h1>
      <p class="actions">
        <button onClick={run} disabled={running === "Auditing…"}>Run an audit now</button>
        <a class="button" href="#/rules">Golden-config rules</a>
      </p>
      {running && <p role="status">{running}</p>}
      <Loaded state={data}>
        {({ audits, report }) =>
          !report ? (
            <p class="muted">No audit yet: add rule files, then run one.</p>
          ) : (
            <>
              <div class="cards">
                <section class="card">
                  <h2>Devices compliant</h2>
                  <p class="big">{report.summary.percent_devices.toFixed(1)} %</p>
                  <small>{report.summary.compliant_devices} of {report.summary.devices}, audit {report.id}, {ago(audits[audits.length - 1].finished_ms)}</small>
                </section>
                <section class="card">
                  <h2>Features compliant</h2>
                  <p class="big">{report.summary.percent_features.toFixed(1)} %</p>
                  <small>{report.summary.waived} waived, {report.summary.errors} errors</small>
                </section>
                <section class="card">
                  <h2>Rule files</h2>
                  <p>{report.sources.join(", ") || "—"}</p>
                </section>
              </div>
              {audits.length > 1 && (
                <section aria-labelledby="h-trend">
                  <h2 id="h-trend">Trend</h2>
                  <LineChart
                    label="Percent of devices compliant per audit"
                    x={audits.map((a) => a.finished_ms)}
                    series={[
                      { label: "devices compliant", values: audits.map((a) => a.summary.percent_devices), unit: "%" },
                      { label: "features compliant", values: audits.map((a) => a.summary.percent_features), unit: "%" },
                    ]}
                  />
                </section>
              )}
              <div role="tablist" class="tabs">
                <button role="tab" aria-selected={tab === "devices"} onClick={() => setTab("devices")}>By device</button>
                <button role="tab" aria-selected={tab === "rules"} onClick={() => setTab("rules")}>By rule</button>
              </div>
              {tab === "devices" ? <ByDevice devices={report.devices} /> : <ByRule report={report} />}
            </>
          )
        }
      </Loaded>
    </>
  );
}

function ByDevice(props: { devices: DeviceReport[] }) {
  const [filter, setFilter] = useState("");
  const [failing, setFailing] = useState(false);
  const rows = useMemo(() => {
    const f = filter.trim().toLowerCase();
    return props.devices
      .filter((d) => (!failing || !d.compliant) && (!f || d.device.toLowerCase().includes(f)))
      .sort((a, b) => a.percent - b.percent || a.device.localeCompare(b.device));
  }, [props.devices, filter, failing]);
  return (
    <>
      <p class="actions">
        <label>Device <input type="search" value={filter} onInput={(e) => setFilter((e.currentTarget as HTMLInputElement).value)} /></label>
        <label><input type="checkbox" checked={failing} onChange={(e) => setFailing((e.currentTarget as HTMLInputElement).checked)} /> failing only</label>
        <span class="muted">{rows.length} of {props.devices.length}</span>
      </p>
      <VirtualTable
        label="Devices by percent compliant"
        rows={rows}
        head={<tr><th>Device</th><th class="num">Compliant</th><th>Status</th><th class="num">Features</th><th class="num">Waived</th></tr>}
        row={(d) => (
          <tr>
            <td><a href={`#/compliance/${encodeURIComponent(d.device)}`}>{d.device}</a></td>
            <td class="num">{d.percent.toFixed(0)} %</td>
            <td><Badge kind={d.compliant ? "pass" : "fail"}>{d.compliant ? "compliant" : "failing"}</Badge></td>
            <td class="num">{d.compliant_features}/{d.features}</td>
            <td class="num">{d.waived_features}</td>
          </tr>
        )}
      />
    </>
  );
}

function ByRule(props: { report: Report }) {
  return (
    <table>
      <thead>
        <tr><th>Rule</th><th>Feature</th><th>Source</th><th class="num">Pass</th><th class="num">Fail</th><th class="num">Waived</th><th class="num">Error</th><th class="num">Compliant</th></tr>
      </thead>
      <tbody>
        {props.report.rules.map((r) => {
          const judged = r.pass + r.fail + r.error;
          return (
            <tr>
              <td>{r.rule}</td>
              <td>{r.feature}</td>
              <td>{r.source}</td>
              <td class="num">{r.pass}</td>
              <td class="num">{r.fail}</td>
              <td class="num">{r.waived}</td>
              <td class="num">{r.error}</td>
              <td class="num">{judged ? ((100 * r.pass) / judged).toFixed(0) : "—"} %</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** One device of the latest audit: each rule's result, missing and extra lines, waivers,
 * the remediation to copy, and the running config it was judged on. */
export function ComplianceDevice(props: { device: string }) {
  const name = encodeURIComponent(props.device);
  const report = useLoad(() => api.get<Report>(`/compliance/audits/latest?device=${name}`), [props.device]);
  const [copied, setCopied] = useState(false);
  return (
    <Loaded state={report}>
      {(r) => {
        const d = r.devices[0];
        const text = (d.remediation ?? []).join("\n");
        return (
          <>
            <p><a href="#/compliance">← Compliance</a></p>
            <h1>{d.device}</h1>
            <p>
              <Badge kind={d.compliant ? "pass" : "fail"}>{d.compliant ? "compliant" : "failing"}</Badge> {d.percent.toFixed(0)} % of
              features ({d.compliant_features}/{d.features}), audit {r.id}, backup {d.commit?.slice(0, 10) ?? "none"}
            </p>
            <section aria-labelledby="h-results">
              <h2 id="h-results">Rules</h2>
              {d.results.map((x) => <Result r={x} />)}
            </section>
            <section aria-labelledby="h-remediation">
              <h2 id="h-remediation">Remediation</h2>
              {text ? (
                <>
                  <button
                    onClick={async () => {
                      await navigator.clipboard.writeText(text);
                      setCopied(true);
                    }}
                  >
                    {copied ? "Copied" : "Copy"}
                  </button>
                  <pre class="config" aria-label="remediation">{text}</pre>
                </>
              ) : (
                <p class="muted">Nothing to change.</p>
              )}
            </section>
            <ConfigSides device={d} />
          </>
        );
      }}
    </Loaded>
  );
}

/** The rules' intended config rendered for the device, beside the configuration the audit
 * judged (from the device's report: no second fetch of it). */
function ConfigSides(props: { device: DeviceReport }) {
  const name = encodeURIComponent(props.device.device);
  // The configuration the audit judged (its backup commit), if the device had one.
  const running = useLoad(async () => {
    const commit = props.device.commit;
    return commit ? api.getText(`/backups/${name}/text?at=${encodeURIComponent(commit)}`) : null;
  }, [props.device.device, props.device.commit]);
  // What each rule file the audit ran expects of this device, rendered for it.
  const intended = useLoad(async () => {
    const sources = [...new Set(props.device.results.map((x) => x.source))].filter((s) => s.includes("@"));
    const parts = await Promise.all(
      sources.map(async (source) => {
        const [file, version] = source.split("@");
        const p = await api.post<{ rules: { rule: string; intended?: string; error?: string }[] }>(
          `/compliance/rules/${encodeURIComponent(file)}/preview?device=${name}&version=${version}`,
          "",
        );
        return p.rules.map((x) => `! ${source} ${x.rule}${x.error ? `: ${x.error}` : ""}\n${x.intended ?? ""}`).join("");
      }),
    );
    return parts.join("");
  }, [props.device.device, props.device.commit]);
  return (
    <div class="side-by-side">
      <section aria-labelledby="h-intended">
        <h2 id="h-intended">Intended (the rules, rendered for {props.device.device})</h2>
        <Loaded state={intended}>{(t) => <pre class="config" aria-label="intended config">{t}</pre>}</Loaded>
      </section>
      <section aria-labelledby="h-running">
        <h2 id="h-running">Running config (the backup audited)</h2>
        <Loaded state={running}>
          {(t) => (t === null ? <p class="muted">No backup of this device yet.</p> : <pre class="config" aria-label="running config">{t}</pre>)}
        </Loaded>
      </section>
    </div>
  );
}

function Result(props: { r: RuleResult }) {
  const { r } = props;
  const kind = r.status === "compliant" ? "pass" : r.status === "waived" ? "waived" : "fail";
  return (
    <details class="result" open={r.status !== "compliant"}>
      <summary>
        <Badge kind={kind}>{r.status}</Badge> <strong>{r.rule}</strong> <small>{r.feature} · {r.source}</small>
      </summary>
      {r.waiver && (
        <p class="notice">Waived: {r.waiver.reason} (until {time(r.waiver.expires_ms)})</p>
      )}
      {r.message && <p class={r.status === "error" ? "error" : ""}>{r.message}</p>}
      {r.missing?.length ? (
        <>
          <h3>Missing</h3>
          <pre class="config missing">{r.missing.join("\n")}</pre>
        </>
      ) : null}
      {r.extra?.length ? (
        <>
          <h3>Extra</h3>
          <pre class="config extra">{r.extra.join("\n")}</pre>
        </>
      ) : null}
    </details>
  );
}
