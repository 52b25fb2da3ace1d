// The golden-config editor: a rule file in CodeMirror (YAML with Jinja2), checked by the API
// as you ask (its errors shown at their line), dry-run against today's backups before it is
// saved, saved as a new version with or without activating it, versions diffed and rolled
// back. Loaded on demand: CodeMirror is most of the UI's code and only this page needs it.
import { useEffect, useRef, useState } from "preact/hooks";
import { EditorState } from "@codemirror/state";
import { EditorView, keymap, lineNumbers, highlightActiveLine } from "@codemirror/view";
import { defaultKeymap, history, historyKeymap } from "@codemirror/commands";
import { defaultHighlightStyle, syntaxHighlighting, indentOnInput } from "@codemirror/language";
import { lintGutter, setDiagnostics, type Diagnostic } from "@codemirror/lint";
import { yaml } from "@codemirror/lang-yaml";
import { jinja } from "@codemirror/lang-jinja";
import { MergeView } from "@codemirror/merge";
import * as api from "../api";
import type { DryRun, RuleVersion } from "../types";
import { Badge, Loaded, message, time, useLoad } from "../util";

const NEW_FILE = `# A golden-config rule file: see docs/COMPLIANCE.md
rules:
  - id: ntp
    feature: ntp
    required:
      - ntp server 10.0.0.1
`;

export function RuleEditor(props: { file: string }) {
  const path = `/compliance/rules/${encodeURIComponent(props.file)}`;
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const [status, setStatus] = useState<{ kind: "error" | "ok" | "busy"; text: string } | null>(null);
  const [dry, setDry] = useState<DryRun | null>(null);
  const [diffWith, setDiffWith] = useState<number | null>(null);
  const [device, setDevice] = useState("");
  const [preview, setPreview] = useState<{ rule: string; intended?: string; error?: string }[] | null>(null);
  const devices = useLoad(() => api.get<{ devices: { name: string }[] }>("/devices"));
  const versions = useLoad(
    () => api.get<{ versions: RuleVersion[] }>(`${path}/versions`).catch((e) => (e instanceof api.ApiError && e.status === 404 ? { versions: [] } : Promise.reject(e))),
    [props.file],
  );
  const files = useLoad(() => api.get<{ files: { file: string; active_version: number | null }[] }>("/compliance/rules"), [props.file]);
  const active = files.data?.files.find((f) => f.file === props.file)?.active_version ?? null;

  useEffect(() => {
    let live = true;
    api.getText(path).then(
      (text) => live && mount(text),
      (e) => live && (e instanceof api.ApiError && e.status === 404 ? mount(NEW_FILE) : setStatus({ kind: "error", text: message(e) })),
    );
    return () => {
      live = false;
      view.current?.destroy();
      view.current = null;
    };
  }, [props.file]);

  const mount = (text: string) => {
    view.current?.destroy();
    view.current = new EditorView({
      parent: host.current!,
      state: EditorState.create({
        doc: text,
        extensions: [
          lineNumbers(),
          highlightActiveLine(),
          history(),
          indentOnInput(),
          keymap.of([...defaultKeymap, ...historyKeymap]),
          syntaxHighlighting(defaultHighlightStyle),
          jinja({ base: yaml() }),
          lintGutter(),
          EditorView.contentAttributes.of({ "aria-label": `Rule file ${props.file}` }),
        ],
      }),
    });
  };

  const text = () => view.current?.state.doc.toString() ?? "";

  /** Show an API error at its line in the editor (the API names file, line, column, key). */
  const showError = (e: unknown) => {
    const v = view.current;
    setStatus({ kind: "error", text: message(e) });
    if (!v) return;
    const d = e instanceof api.ApiError ? (e.details as { line?: number; column?: number; key?: string } | undefined) : undefined;
    const diagnostics: Diagnostic[] = [];
    if (d?.line && d.line >= 1 && d.line <= v.state.doc.lines) {
      const line = v.state.doc.line(d.line);
      diagnostics.push({ from: line.from, to: Math.max(line.from, line.to), severity: "error", message: message(e) });
    }
    v.dispatch(setDiagnostics(v.state, diagnostics));
  };
  const clearErrors = () => view.current && view.current.dispatch(setDiagnostics(view.current.state, []));

  const dryRun = async () => {
    setStatus({ kind: "busy", text: "Checking and auditing today's backups with this draft…" });
    setDry(null);
    try {
      const r = await api.post<DryRun>(`${path}/dry-run`, text());
      clearErrors();
      setDry(r);
      setStatus({ kind: "ok", text: `Valid. ${r.devices_changed.length} device(s) would change status.` });
    } catch (e) {
      showError(e);
    }
  };
  const renderPreview = async () => {
    if (!device) return;
    setPreview(null);
    try {
      const r = await api.post<{ rules: { rule: string; intended?: string; error?: string }[] }>(
        `${path}/preview?device=${encodeURIComponent(device)}`,
        text(),
      );
      clearErrors();
      setPreview(r.rules);
    } catch (e) {
      showError(e);
    }
  };
  const save = async (activate: boolean) => {
    setStatus({ kind: "busy", text: "Saving…" });
    try {
      const r = await api.put<{ version: number }>(`${path}?activate=${activate}`, text());
      clearErrors();
      setStatus({ kind: "ok", text: `Saved as version ${r.version}${activate ? ", active" : " (not active)"}.` });
      versions.reload();
      files.reload();
    } catch (e) {
      showError(e);
    }
  };
  const activate = async (version: number) => {
    try {
      await api.post(`${path}/activate`, { version });
      setStatus({ kind: "ok", text: `Version ${version} is active.` });
      files.reload();
      versions.reload();
    } catch (e) {
      setStatus({ kind: "error", text: message(e) });
    }
  };
  const rollback = async () => {
    try {
      await api.post(`${path}/rollback`);
      setStatus({ kind: "ok", text: "Rolled back." });
      files.reload();
      versions.reload();
    } catch (e) {
      setStatus({ kind: "error", text: message(e) });
    }
  };

  return (
    <>
      <p><a href="#/rules">← Rule files</a></p>
      <h1>{props.file}</h1>
      <p class="muted">Active version: {active ?? "none"}</p>
      <div ref={host} class="editor" />
      <p class="actions">
        <button onClick={dryRun}>Check and dry run</button>
        <button onClick={() => save(false)}>Save as a new version</button>
        <button onClick={() => save(true)}>Save and activate</button>
        {active && <button onClick={rollback}>Roll back</button>}
      </p>
      {status && (
        <p class={status.kind === "error" ? "error" : status.kind === "ok" ? "ok" : "muted"} role={status.kind === "error" ? "alert" : "status"}>
          {status.text}
        </p>
      )}
      {dry && <DryRunResult dry={dry} />}
      <section aria-labelledby="h-preview">
        <h2 id="h-preview">Preview for a device</h2>
        <p class="actions">
          <label>
            Device{" "}
            <select aria-label="Device to preview" value={device} onChange={(e) => setDevice((e.currentTarget as HTMLSelectElement).value)}>
              <option value="">—</option>
              {(devices.data?.devices ?? []).slice(0, 2000).map((d) => <option value={d.name}>{d.name}</option>)}
            </select>
          </label>
          <button onClick={renderPreview} disabled={!device}>Render the intended config</button>
        </p>
        {preview && (
          <pre class="config" aria-label="preview">
            {preview.map((p) => `! ${p.rule}${p.error ? `: ${p.error}` : ""}\n${p.intended ?? ""}`).join("")}
          </pre>
        )}
      </section>
      <section aria-labelledby="h-versions">
        <h2 id="h-versions">Versions</h2>
        <Loaded state={versions}>
          {(v) =>
            v.versions.length === 0 ? (
              <p class="muted">Not saved yet.</p>
            ) : (
              <table>
                <thead>
                  <tr><th>Version</th><th>Uploaded</th><th class="num">Bytes</th><th></th></tr>
                </thead>
                <tbody>
                  {[...v.versions].reverse().map((x) => (
                    <tr>
                      <td>{x.version}</td>
                      <td>{time(x.uploaded_ms)}</td>
                      <td class="num">{x.bytes}</td>
                      <td class="actions">
                        {x.version === active ? <Badge kind="running">active</Badge> : <button onClick={() => activate(x.version)}>Activate</button>}
                        <button onClick={() => setDiffWith(x.version)}>Diff with the editor</button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )
          }
        </Loaded>
      </section>
      {diffWith !== null && <Diff path={path} version={diffWith} current={text()} onClose={() => setDiffWith(null)} />}
    </>
  );
}

function DryRunResult(props: { dry: DryRun }) {
  const { dry } = props;
  return (
    <section aria-labelledby="h-dry">
      <h2 id="h-dry">Dry run</h2>
      <p>
        Devices compliant: {dry.active.percent_devices.toFixed(1)} % now → <strong>{dry.draft.percent_devices.toFixed(1)} %</strong> with this
        draft.
      </p>
      {dry.devices_changed.length > 0 && (
        <table>
          <thead>
            <tr><th>Device</th><th>Now</th><th>With the draft</th></tr>
          </thead>
          <tbody>
            {dry.devices_changed.map((d) => (
              <tr>
                <td>{d.device}</td>
                <td><Badge kind={d.compliant_before ? "pass" : "fail"}>{d.compliant_before ? "compliant" : "failing"}</Badge> {d.percent_before.toFixed(0)} %</td>
                <td><Badge kind={d.compliant_after ? "pass" : "fail"}>{d.compliant_after ? "compliant" : "failing"}</Badge> {d.percent_after.toFixed(0)} %</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** A stored version beside the editor's text (CodeMirror's merge view). */
function Diff(props: { path: string; version: number; current: string; onClose: () => void }) {
  const host = useRef<HTMLDivElement>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let merge: MergeView | null = null;
    api.getText(`${props.path}?version=${props.version}`).then(
      (old) => {
        const readOnly = [EditorState.readOnly.of(true), EditorView.editable.of(false), lineNumbers(), syntaxHighlighting(defaultHighlightStyle)];
        merge = new MergeView({ a: { doc: old, extensions: readOnly }, b: { doc: props.current, extensions: readOnly }, parent: host.current! });
      },
      (e) => setError(message(e)),
    );
    return () => merge?.destroy();
  }, [props.version, props.current]);
  return (
    <section aria-labelledby="h-diff">
      <h2 id="h-diff">Version {props.version} (left) and the editor (right)</h2>
      <button onClick={props.onClose}>Close the diff</button>
      {error && <p class="error" role="alert">{error}</p>}
      <div ref={host} class="diff" />
    </section>
  );
}
