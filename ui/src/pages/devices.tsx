import { useState } from "preact/hooks";
import * as api from "../api";
import type { Device } from "../types";
import { Loaded, VirtualTable, useLoad } from "../util";

/** The inventory: every device with what it depends on; long inventories scroll virtualized. */
export function Devices() {
  const list = useLoad(() => api.get<{ devices: Device[] }>("/devices"));
  const [filter, setFilter] = useState("");
  return (
    <>
      <h1>Devices</h1>
      <label>
        Filter <input type="search" value={filter} onInput={(e) => setFilter((e.currentTarget as HTMLInputElement).value)} placeholder="name, address, site, role" />
      </label>
      <Loaded state={list}>
        {(d) => {
          const f = filter.trim().toLowerCase();
          const rows = f
            ? d.devices.filter((x) => [x.name, x.address, x.site, x.role, x.platform].some((v) => v?.toLowerCase().includes(f)))
            : d.devices;
          return (
            <>
              <p class="muted">{rows.length} of {d.devices.length} devices</p>
              <VirtualTable
                label="Devices"
                rows={rows}
                head={
                  <tr><th>Name</th><th>Address</th><th>Platform</th><th>Role</th><th>Site</th><th>Depends on</th></tr>
                }
                row={(x) => (
                  <tr>
                    <td>{x.name}</td>
                    <td>{x.address}</td>
                    <td>{x.platform ?? ""}</td>
                    <td>{x.role ?? ""}</td>
                    <td>{x.site ?? ""}</td>
                    <td>{[...(x.parents ?? []), ...(x.redundancy_groups ?? []).map((g) => `one of ${g.join("/")}`)].join(", ")}</td>
                  </tr>
                )}
              />
            </>
          );
        }}
      </Loaded>
    </>
  );
}
