"""Protocol v1 reports. Each kind is an envelope `{"schema": "<kind>/v1", "host_id", "sent_at",
"data"}` around its own data model; see docs/protocol.md."""

from __future__ import annotations

import uuid
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Literal, NotRequired

from pydantic import AwareDatetime, Field, StringConstraints
from typing_extensions import TypedDict

from schemas.common import ENTRY_CONFIG, NO_NUL, Name, OptionalText, ShortText, WireModel

MAX_PACKAGES = 20_000
MAX_RULES = 20_000
MAX_ADDRESSES = 256
MAX_DEVICES = 1_024

NonNegative = Annotated[float, Field(ge=0, le=1e9)]
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]
Mac = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")]


# -- heartbeat -----------------------------------------------------------------------------------


class ReportKind(StrEnum):
    """The kinds of protocol v1: a report's `schema` is `<kind>/v1`, and its AMQP type and
    routing key (`report.<kind>`) name the kind."""

    HEARTBEAT = "heartbeat"
    SYSTEM_INFO = "system_info"
    HARDWARE = "hardware"
    PACKAGES = "packages"
    COMPLIANCE = "compliance"


# A compliance rule's result, as the tenant table's check constraint allows it.
ComplianceStatus = Literal["pass", "fail", "error", "notapplicable"]


# A host's health as its agent says it in a heartbeat (the silo's `HostStatus` holds these and
# what the pipeline adds: unknown, down, up).
HeartbeatStatus = Literal["ok", "degraded", "critical"]


class HeartbeatData(WireModel):
    """A heartbeat: the agent is alive, its host's status and load."""

    status: HeartbeatStatus
    agent_version: ShortText
    uptime_s: Count
    load_1: NonNegative
    load_5: NonNegative
    load_15: NonNegative


# -- system_info ---------------------------------------------------------------------------------


class SystemInfoData(WireModel):
    """The host's names, operating system, kernel, architecture and addresses."""

    hostname: Name
    fqdn: Name
    os_name: Name
    os_version: Name
    kernel: Name
    arch: ShortText
    ipv4: list[IPv4Address] = Field(max_length=MAX_ADDRESSES)
    ipv6: list[IPv6Address] = Field(max_length=MAX_ADDRESSES)


# -- hardware ------------------------------------------------------------------------------------


class Cpu(WireModel):
    """The host's CPU."""

    vendor: Name
    model: Name
    cores: Annotated[int, Field(ge=1, le=100_000)]
    threads: Annotated[int, Field(ge=1, le=100_000)]
    mhz: NonNegative


class Disk(WireModel):
    """One disk of the host."""

    device: Name
    size_gb: NonNegative
    mount: OptionalText | None = None
    fs: OptionalText | None = None


class Nic(WireModel):
    """One network interface of the host."""

    name: Name
    mac: Mac | None = None
    addresses: list[IPv4Address | IPv6Address] = Field(max_length=MAX_ADDRESSES)


class HardwareData(WireModel):
    """The host's hardware: CPU, memory, disks, network interfaces."""

    cpu: Cpu
    memory_mb: Count
    disks: list[Disk] = Field(max_length=MAX_DEVICES)
    nics: list[Nic] = Field(max_length=MAX_DEVICES)


# -- packages ------------------------------------------------------------------------------------


class Package(TypedDict):
    """One installed package. `source` and `source_version` name the source package it was built
    from (dpkg's `${source:Package}` and `${source:Version}`): advisories are keyed by them.
    Absent, they are the binary's own name and version (agents from before they existed)."""

    __pydantic_config__ = ENTRY_CONFIG  # type: ignore[misc]
    name: Name
    version: Name
    arch: ShortText
    source: NotRequired[Name]
    source_version: NotRequired[Name]


class PackagesData(WireModel):
    """A full snapshot: it replaces the host's whole set."""

    manager: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
    packages: list[Package] = Field(max_length=MAX_PACKAGES)


# -- compliance ----------------------------------------------------------------------------------


class RuleResult(TypedDict):
    """One rule's result in a compliance run."""

    __pydantic_config__ = ENTRY_CONFIG  # type: ignore[misc]
    rule_id: Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=NO_NUL)]
    status: ComplianceStatus
    severity: Literal["info", "low", "medium", "high", "critical", "unknown"]


class ComplianceData(WireModel):
    """One run of one benchmark: it replaces the host's results for that benchmark."""

    benchmark_id: Name
    results: list[RuleResult] = Field(max_length=MAX_RULES)


# -- envelopes -----------------------------------------------------------------------------------


class _Envelope(WireModel):
    host_id: uuid.UUID
    sent_at: AwareDatetime


class HeartbeatReport(_Envelope):
    """A heartbeat report (`report.heartbeat`)."""

    schema_: Literal["heartbeat/v1"] = Field(alias="schema")
    data: HeartbeatData


class SystemInfoReport(_Envelope):
    """A system_info report (`report.system_info`)."""

    schema_: Literal["system_info/v1"] = Field(alias="schema")
    data: SystemInfoData


class HardwareReport(_Envelope):
    """A hardware report (`report.hardware`)."""

    schema_: Literal["hardware/v1"] = Field(alias="schema")
    data: HardwareData


class PackagesReport(_Envelope):
    """A packages report (`report.packages`): the host's whole package list."""

    schema_: Literal["packages/v1"] = Field(alias="schema")
    data: PackagesData


class ComplianceReport(_Envelope):
    """A compliance report (`report.compliance`): one benchmark's whole run."""

    schema_: Literal["compliance/v1"] = Field(alias="schema")
    data: ComplianceData


Report = HeartbeatReport | SystemInfoReport | HardwareReport | PackagesReport | ComplianceReport

# The kinds of protocol v1 and their envelope models: the one list ingest validates against.
REPORT_MODELS: dict[ReportKind, type[Report]] = {
    ReportKind.HEARTBEAT: HeartbeatReport,
    ReportKind.SYSTEM_INFO: SystemInfoReport,
    ReportKind.HARDWARE: HardwareReport,
    ReportKind.PACKAGES: PackagesReport,
    ReportKind.COMPLIANCE: ComplianceReport,
}
KINDS = tuple(REPORT_MODELS)
