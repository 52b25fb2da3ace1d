// Shapes of the API's answers the UI reads (see api/openapi.json).
export interface LastError { at_ms: number; message: string }
export interface ComponentSummary {
  name: string;
  state: "running" | "failing" | "inactive";
  reason?: string;
  active_version: number | null;
  active_label: string | null;
  last_error: LastError | null;
}
export interface Incident {
  id: number;
  root: string;
  title: string;
  status: "open" | "resolved";
  acknowledged: boolean;
  opened_ms: number;
  updated_ms: number;
  closed_ms: number | null;
  policy: string;
  children: string[];
}
export interface IncidentDetail extends Incident {
  alerts: { fingerprint: string; device: string | null; role: string; reason: string; added_ms: number; resolved_ms: number | null }[];
  timeline: { at_ms: number; kind: string; detail: string }[];
}
export interface Device {
  name: string;
  address: string;
  platform?: string;
  role?: string;
  site?: string;
  tags?: string[];
  parents?: string[];
  redundancy_groups?: string[][];
}
export interface AuditInfo {
  id: number;
  started_ms: number;
  finished_ms: number;
  trigger: string;
  summary: { devices: number; compliant_devices: number; percent_devices: number; percent_features: number; errors: number; waived: number };
}
export interface TopRow { group: Record<string, unknown>; bytes: number; packets: number; flows: number }
export interface RuleResult {
  rule: string;
  feature: string;
  source: string;
  status: "compliant" | "missing" | "extra" | "error" | "waived";
  missing?: string[];
  extra?: string[];
  message?: string;
  remediation?: string[];
  waiver?: { reason: string; expires_ms: number };
}
export interface DeviceReport {
  device: string;
  commit: string | null;
  percent: number;
  features: number;
  compliant_features: number;
  waived_features: number;
  compliant: boolean;
  results: RuleResult[];
  remediation?: string[];
}
export interface RuleSummary { rule: string; feature: string; source: string; pass: number; fail: number; waived: number; error: number }
export interface Report {
  id?: number;
  sources: string[];
  summary: AuditInfo["summary"];
  rules: RuleSummary[];
  devices: DeviceReport[];
}
export interface RuleFileInfo { file: string; active_version: number | null; versions: number; latest_version: number }
export interface RuleVersion { version: number; sha256: string; bytes: number; uploaded_ms: number; active?: boolean }
export interface DryRun {
  active: AuditInfo["summary"];
  draft: AuditInfo["summary"];
  devices_changed: { device: string; compliant_before: boolean; compliant_after: boolean; percent_before: number; percent_after: number }[];
}
