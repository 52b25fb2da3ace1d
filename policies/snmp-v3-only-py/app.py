"""Compliance rule component `snmp-v3-only`, in Python: the same rules, configuration and
findings as the Rust component policies/snmp-v3-only (read its module doc for the why), so
either can be deployed and a test can hold them to each other.

- `snmp-no-community` (feature `snmp`): each `snmp-server community NAME ...` line is
  `extra`; the finding's lines mask the name (`snmp-server community ***** RO`) and its
  message never names it; the remediation, `no ` and the line as it is, keeps the real name:
  it is what the operator pastes, and the device cannot remove a community without it.
- `snmp-v3-required` (feature `snmp`): an `snmp-server group NAME v3 LEVEL` or SNMPv3
  `snmp-server user` line at `[config] min_level` (`auth` or `priv`, default `priv`) or
  above; otherwise `missing`, with `snmp-server group <group> v3 <min_level>` (`[config]
  group`, default `SNMPV3`) as line and remediation, or on NX-OS (no groups; a user's keys are
  secrets) no lines and a message saying to add a user.

Scope: devices whose platform is in `[config] platforms` (default ios, iosxe, nxos, eos).

Built with componentize-py against wit/ (world `compliance-rule`): scripts/build-python-rules.
Plain Python, no dependencies: every module imported is bundled into the component.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.compliance_types import Device, Finding, Status

FEATURE = "snmp"
NO_COMMUNITY = "snmp-no-community"
V3_REQUIRED = "snmp-v3-required"
MASK = "*****"
DEFAULT_PLATFORMS = ["ios", "iosxe", "nxos", "eos"]
# SNMPv3 security levels, weakest first.
LEVELS = {"noauth": 0, "auth": 1, "priv": 2}


class Rule:
    """The rule's settings, from the manifest's `[config]` table."""

    def __init__(self, config):
        if not isinstance(config, dict):
            config = {}
        min_level = string_or(config.get("min_level"), "priv")
        if min_level not in ("auth", "priv"):
            raise ValueError(f"config `min_level`: `{min_level}` is not auth or priv")
        group = string_or(config.get("group"), "SNMPV3").strip()
        if not group or any(c.isspace() for c in group):
            raise ValueError(f"config `group`: `{group}` is not one word")
        self.platforms = platforms(config)
        self.min_level = min_level
        self.group = group

    def evaluate(self, device: Device, config: str) -> list[Finding]:
        if not platform_in(device, self.platforms):
            return []  # not in scope
        return [
            community_finding(communities(config)),
            v3_finding(config, self.min_level, self.group, platform_in(device, ["nxos"])),
        ]


def string_or(value, default):
    return value if isinstance(value, str) else default


def platforms(config):
    """`[config] platforms`: a list of platform names, or the default."""
    if "platforms" not in config:
        return list(DEFAULT_PLATFORMS)
    names = config["platforms"]
    if not isinstance(names, list) or not all(isinstance(p, str) for p in names):
        raise ValueError("config `platforms` is not a list of platform names")
    return names


def platform_in(device, names):
    """Whether the device's platform is one of `names` (case-insensitive)."""
    platform = device.platform
    return platform is not None and any(p.lower() == platform.lower() for p in names)


def top_level(config):
    """The top-level lines of the configuration, trimmed at the end."""
    for line in config.split("\n"):
        line = line.rstrip()
        if line and not line[0].isspace():
            yield line


def communities(config):
    """The `snmp-server community NAME ...` lines."""
    return [
        line
        for line in top_level(config)
        if len(line.split()) >= 3 and line.split()[:2] == ["snmp-server", "community"]
    ]


def mask(line):
    """`snmp-server community public RO` as `snmp-server community ***** RO`."""
    words = line.split()
    words[2] = MASK
    return " ".join(words)


def finding(rule, status=Status.COMPLIANT, lines=(), message="", remediation=()):
    return Finding(rule, FEATURE, status, list(lines), message, list(remediation))


def community_finding(found):
    if not found:
        return finding(NO_COMMUNITY)
    return finding(
        NO_COMMUNITY,
        Status.EXTRA,
        [mask(line) for line in found],
        f"{len(found)} SNMPv1/v2c community line(s) (names masked): SNMPv3 only",
        [f"no {line}" for line in found],
    )


def v3_level(line):
    """The SNMPv3 level a `snmp-server group` or `snmp-server user` line sets up, or None."""
    words = line.split()
    if len(words) >= 5 and words[:2] == ["snmp-server", "group"] and words[3] == "v3":
        return LEVELS.get(words[4])
    if len(words) >= 3 and words[:2] == ["snmp-server", "user"]:
        return user_level(words[3:])
    return None


def user_level(options):
    """IOS and EOS say `GROUP v3 [auth ... [priv ...]]`, NX-OS (always v3) `[ROLE] auth ...`."""
    if "v1" in options or "v2c" in options:
        return None
    if "priv" in options:
        return LEVELS["priv"]
    if "auth" in options:
        return LEVELS["auth"]
    return LEVELS["noauth"]


def v3_finding(config, min_level, group, nxos):
    levels = (v3_level(line) for line in top_level(config))
    if any(level is not None and level >= LEVELS[min_level] for level in levels):
        return finding(V3_REQUIRED)
    if nxos:
        message = (
            f"no SNMPv3 user at `{min_level}` level or above: add one with `snmp-server user` "
            "(its keys are secrets this rule cannot write)"
        )
        return finding(V3_REQUIRED, Status.MISSING, [], message, [])
    line = f"snmp-server group {group} v3 {min_level}"
    message = f"no SNMPv3 group or user at `{min_level}` level or above"
    return finding(V3_REQUIRED, Status.MISSING, [line], message, [line])


STATE = {}


class WitWorld(wit_world.WitWorld):
    """The `compliance-rule` world's exports; an exception is the call's `err`."""

    def init(self, config: str) -> None:
        try:
            STATE["rule"] = Rule(json.loads(config))
        except json.JSONDecodeError as e:
            raise Err(f"config is not JSON: {e}")
        except ValueError as e:
            raise Err(str(e))

    def evaluate(self, device: Device, config: str) -> list[Finding]:
        rule = STATE.get("rule")
        if rule is None:
            raise Err("evaluate before init")
        return rule.evaluate(device, config)
