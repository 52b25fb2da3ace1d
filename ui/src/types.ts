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
