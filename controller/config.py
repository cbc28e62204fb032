"""The controller's configuration: one pydantic-settings tree, loaded once and injected.

Sources, strongest first: environment variables ``BORNE__SECTION__FIELD`` (for example
``BORNE__DATABASE__URL``), then the TOML file given on the command line, then defaults.
Secrets are ``SecretStr`` and never appear in logs or ``repr``. Nothing else in the code
base reads ``os.environ`` for settings: ``load_settings`` is called in ``main`` only.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "ApConfigSettings",
    "CommunePortalSettings",
    "ConfigError",
    "DashboardSettings",
    "DatabaseSettings",
    "EmailCodeSettings",
    "LegalSettings",
    "MqttSettings",
    "PortalSettings",
    "Problem",
    "RadiusSettings",
    "SessionSettings",
    "Settings",
    "SmsCodeSettings",
    "StatsSettings",
    "check_file",
    "load_settings",
    "settings_or_exit",
]

Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """Where the controller meets its agents."""

    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    client_id: str = "borne-controller"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    # MQTT 5 shared subscription group, to spread the load over several controllers.
    share_group: str | None = None
    # Messages waiting for the database; when full the bridge stops reading the socket.
    queue_size: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000
    # After `borne ap rotate`, an AP's previous command key and MQTT login stay valid this
    # long (an AP not yet redeployed keeps working), then are forgotten.
    rotation_grace_s: Annotated[int, Field(ge=1, le=90 * 86400)] = 86400

    @model_validator(mode="after")
    def _password_needs_user(self) -> MqttSettings:
        if self.password is not None and not self.username:
            raise ValueError("a password is set without a username")
        return self


class DatabaseSettings(_Section):
    """State storage: SQLite by default, PostgreSQL for several controllers."""

    url: SecretStr = SecretStr("sqlite+aiosqlite:///borne.db")

    @field_validator("url")
    @classmethod
    def _known_driver(cls, v: SecretStr) -> SecretStr:
        url = v.get_secret_value()
        if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("the URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v


LoginMethodName = Literal["click-through", "voucher", "email", "sms"]
# Country calling codes of the EU member states (France first): where SMS codes may go.
EU_CALLING_CODES = (
    "+33", "+32", "+49", "+43", "+359", "+357", "+385", "+45", "+34", "+372", "+358",
    "+30", "+36", "+353", "+39", "+371", "+370", "+352", "+356", "+31", "+48", "+351",
    "+420", "+40", "+421", "+386", "+46", "+262", "+590", "+594", "+596",
)  # fmt: skip


class EmailCodeSettings(_Section):
    """E-mail login codes: the SMTP relay and the abuse limits."""

    smtp_host: str = "127.0.0.1"
    smtp_port: Port = 25
    # "starttls" upgrades a plain connection, "tls" connects over TLS (port 465).
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    # CA certificates that sign the relay's (PEM); None: the system's.
    smtp_ca_file: Path | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    sender: str = "wifi@localhost"
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    code_minutes: Annotated[int, Field(ge=1, le=60)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    cooldown_s: Annotated[int, Field(ge=0, le=3600)] = 60
    per_address_per_day: Annotated[int, Field(ge=1, le=100)] = 5
    per_ip_per_day: Annotated[int, Field(ge=1, le=10_000)] = 20


class SmsCodeSettings(_Section):
    """SMS login codes through a generic HTTP provider (JSON POST) and the abuse limits."""

    url: str | None = None
    token: SecretStr | None = None
    # The JSON body; "{to}" and "{text}" in any string value are replaced.
    body: dict[str, str] = {"to": "{to}", "text": "{text}"}
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    code_minutes: Annotated[int, Field(ge=1, le=60)] = 10
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    cooldown_s: Annotated[int, Field(ge=0, le=3600)] = 60
    per_number_per_day: Annotated[int, Field(ge=1, le=100)] = 3
    per_ip_per_day: Annotated[int, Field(ge=1, le=10_000)] = 10
    allowed_prefixes: tuple[str, ...] = EU_CALLING_CODES


class CommunePortalSettings(_Section):
    """One commune's portal options (``[portal.communes."46042"]``); unset: the defaults."""

    methods: tuple[LoginMethodName, ...] | None = None
    can_extend_session: bool | None = None
    # WiFi4EU: the network identifier (UUID) the Commission gave the commune.
    wifi4eu_network_id: Annotated[str, Field(pattern=r"^[0-9A-Fa-f-]{8,64}$")] | None = None
    wifi4eu_self_test: bool = False
    # Territorial continuity at this commune's hotspots (returning devices without a
    # page, RADIUS MAC authentication); None: on when [portal] continuity_hours > 0.
    continuity: bool | None = None
    # The commune's session limits at login (a voucher's own still win); None: [sessions].
    session_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None
    up_kbps: Annotated[int, Field(ge=0)] | None = None
    down_kbps: Annotated[int, Field(ge=0)] | None = None
    # Idle timeout (RADIUS Idle-Timeout) and data quota in MB (each direction at an
    # openNDS gateway, the total in RADIUS; 0: unlimited); None: [radius]'s.
    idle_timeout_s: Annotated[int, Field(ge=0, le=86400)] | None = None
    quota_mb: Annotated[int, Field(ge=0)] | None = None


class PortalSettings(_Section):
    """The captive portal openNDS sends visitors to (FAS)."""

    listen_host: str = "127.0.0.1"
    listen_port: Port = 8080
    # The network's name as visitors see it on the portal (usually the SSID).
    network_name: str = "Wi-Fi public"
    # The URL a visitor's browser reaches, as openNDS's fasremoteip/fasport/faspath say.
    public_url: str = "http://127.0.0.1:8080/fas/"
    # Shared with openNDS (faskey); signs the portal's own form state too.
    fas_key: SecretStr = SecretStr("change-me-fas-key")
    terms_version: str = "2026-11-01"
    default_language: Literal["fr", "en", "es", "de", "nl", "it"] = "fr"
    # RFC 8908: a page about the place, shown by the OS (https), and whether a session
    # can be extended from the status page.
    venue_info_url: str | None = None
    can_extend_session: bool = False
    # Keys the hashes of voucher codes and of devices in proofs of acceptance (never
    # shared with the access points, unlike fas_key).
    secret_key: SecretStr = SecretStr("change-me-portal-secret-key")
    # Login methods offered by default: "click-through", "voucher", "email", "sms"
    # (e-mail and SMS collect identity data, kept 5 years: off unless a commune asks).
    methods: tuple[LoginMethodName, ...] = ("click-through", "voucher")
    communes: dict[str, CommunePortalSettings] = {}
    email: EmailCodeSettings = EmailCodeSettings()
    sms: SmsCodeSettings = SmsCodeSettings()
    # Identity data (e-mail, phone) is kept this long (CPCE R10-13 I: 5 years).
    identity_retention_days: Annotated[int, Field(ge=1, le=3660)] = 1827
    # Wrong voucher codes allowed per client (and per source address) in 10 minutes.
    max_code_failures: Annotated[int, Field(ge=1, le=100)] = 5
    # Territorial continuity: a device that accepted the terms in force is let in at
    # every hotspot without a page (openNDS) or by MAC authentication (RADIUS) for this
    # long after the acceptance; 0 turns it off. A new version of the terms ends it.
    continuity_hours: Annotated[int, Field(ge=0, le=8760)] = 24
    # UAM gateways (CoovaChilli-style): the uamsecret of NAS without their own, and how
    # long the one-time credential handed to the gateway's /logon stays usable.
    uam_secret: SecretStr | None = None
    uam_credential_s: Annotated[int, Field(ge=10, le=3600)] = 120

    def continuity_at(self, insee: str | None) -> int:
        """Hours of territorial continuity at commune ``insee``'s hotspots (0: off)."""
        own = self.communes.get(insee) if insee is not None else None
        return 0 if own is not None and own.continuity is False else self.continuity_hours

    @model_validator(mode="after")
    def _sms_needs_a_provider(self) -> PortalSettings:
        uses_sms = "sms" in self.methods or any(
            c.methods is not None and "sms" in c.methods for c in self.communes.values()
        )
        if uses_sms and self.sms.url is None:
            raise ValueError('the "sms" login method is on but [portal.sms] url is not set')
        return self


class SessionSettings(_Section):
    """Limits given to a visitor at login and the rules that close sessions."""

    session_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 24 * 60
    up_kbps: Annotated[int, Field(ge=0)] = 0
    down_kbps: Annotated[int, Field(ge=0)] = 0
    # A session with no update for stale_factor x the accounting interval is closed.
    acct_interval_s: Annotated[int, Field(ge=10, le=3600)] = 60
    stale_factor: Annotated[int, Field(ge=2, le=100)] = 3
    command_ttl_s: Annotated[int, Field(ge=5, le=3600)] = 120


class ApConfigSettings(_Section):
    """Gateway settings pushed to the access points (``apply_config``, docs/AGENT.md).

    Session length and rates come from ``[sessions]``, the FAS from ``[portal]
    public_url``, the RFC 8908 API URL (DHCP option 114) from the portal's address.
    """

    # Push when an AP comes online reporting another version than the controller's.
    auto_push: bool = False
    # Host names, IPv4 addresses or networks reachable before login, and their ports
    # (empty: 80 and 443).
    walled_garden: tuple[str, ...] = ()
    walled_garden_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    up_quota_kb: Annotated[int, Field(ge=0)] = 0
    down_quota_kb: Annotated[int, Field(ge=0)] = 0
    # Send the portal's RFC 8908 API URL as DHCP option 114 (RFC 8910).
    capport: bool = True
    # openNDS needs the FAS's address: set it when public_url names a host.
    fas_remote_ip: str | None = None


class DashboardSettings(_Section):
    """The dashboards web application."""

    listen_host: str = "127.0.0.1"
    listen_port: Port = 8081
    # A login lasts this long; then the password (and TOTP code) are asked again.
    login_minutes: Annotated[int, Field(ge=5, le=7 * 24 * 60)] = 8 * 60
    # Failed logins allowed per user name and per address within the window.
    login_max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    login_window_s: Annotated[int, Field(ge=10, le=86400)] = 900
    # Mark the login cookie Secure: set it when the dashboards are served over HTTPS.
    secure_cookie: bool = False
    # Where `borne dashboard assets install` puts the charting library (npm); without
    # it the pages keep their server-drawn charts and tables.
    assets_dir: Path = Path("dashboard-assets")
    # E-mail each commune's monthly report to the accounts that asked for it, through
    # [portal.email]'s relay and sender; off: subscriptions are kept, nothing is sent.
    report_email: bool = False


class RadiusSettings(_Section):
    """The RADIUS server for third-party gateways (disabled by default)."""

    enabled: bool = False
    listen_host: str = "127.0.0.1"
    auth_port: Port = 1812
    acct_port: Port = 1813
    # Reply limits of an Access-Accept (Session-Timeout comes from [sessions]).
    idle_timeout_s: Annotated[int, Field(ge=0, le=86400)] = 900
    max_total_mb: Annotated[int, Field(ge=0)] = 0
    # Keys the hash under which a device is remembered for territorial continuity
    # (portal and MAC authentication; the period is [portal] continuity_hours).
    device_key: SecretStr = SecretStr("change-me-radius-device-key")
    # Accounting records waiting for the database; when full, requests are dropped
    # (counted) and the NAS retransmits them.
    queue_size: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000
    batch_max: Annotated[int, Field(ge=1, le=10_000)] = 256
    # Disconnect/CoA: RFC 5080 §2.2.1-style retries.
    coa_timeout_s: Annotated[float, Field(gt=0, le=30)] = 2.0
    coa_retries: Annotated[int, Field(ge=0, le=10)] = 3


class LegalSettings(_Section):
    """The legal retention log (CPCE L34-1): a store of its own, see docs/LEGAL.md."""

    enabled: bool = False
    # The log's folder: nothing else in borne reads it.
    directory: Path = Path("legal")
    # Where the master key (base64 of 32 bytes) comes from: a file readable by the
    # controller only, or the environment (BORNE__LEGAL__MASTER_KEY).
    master_key_provider: Literal["file", "env"] = "file"
    master_key_file: Path = Path("legal-master.key")
    master_key: SecretStr | None = None
    # Ed25519 key (PEM) signing the daily heads, the shredding statements and exports.
    signing_key_file: Path = Path("legal-signing.pem")
    # 1 year from the connection (L34-1 II bis, R10-13 IV); deleting later is an offence.
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 365
    # Volumes and location are kept 1 year only while the yearly national-security
    # decree is in force (L34-1 III); otherwise at most 3 months.
    national_security_decree: bool = True
    traffic_retention_days: Annotated[int, Field(ge=1, le=3650)] = 92
    checkpoint_s: Annotated[float, Field(ge=1, le=86400)] = 300.0
    poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    batch: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @model_validator(mode="after")
    def _env_key_given(self) -> LegalSettings:
        if self.enabled and self.master_key_provider == "env" and self.master_key is None:
            raise ValueError("master_key_provider is env but BORNE__LEGAL__MASTER_KEY is not set")
        return self


class StatsSettings(_Section):
    """Anonymised mobility statistics (docs/STATISTICS.md)."""

    enabled: bool = False
    # Where published cells go: the state database ("sql"), InfluxDB 1.x ("influxdb1")
    # or InfluxDB 2.x/3.x and compatible servers through influxdb-client ("influxdb2").
    store: Literal["sql", "influxdb1", "influxdb2"] = "sql"
    url: str = "http://127.0.0.1:8086"
    # InfluxDB 1.x database, or 2.x bucket.
    database: str = "borne"
    org: str = "borne"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    # A published cell counts at least k visitors (INSEE rule for persons: 11; never < 5).
    k: Annotated[int, Field(ge=5, le=1000)] = 11
    # Laplace noise budget per device-day and statistic; none by default.
    epsilon: Annotated[float, Field(gt=0, le=10)] | None = None
    timezone: str = "Europe/Paris"
    # Key of the opt-out list's MAC hashes (long-lived, unlike the daily keys).
    optout_key: SecretStr = SecretStr("change-me-stats-optout-key")
    max_sessions_per_device: Annotated[int, Field(ge=1, le=1000)] = 20
    max_communes_per_device: Annotated[int, Field(ge=1, le=320)] = 8
    max_flows_per_device: Annotated[int, Field(ge=1, le=100)] = 3
    poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    buffer_cells: Annotated[int, Field(ge=1000, le=10_000_000)] = 500_000


class Settings(BaseSettings):
    """The whole controller configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BORNE__",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    name: str = "borne"
    # Base64 or any string: the key from which each AP's command key is derived when
    # the registry holds none of its own (demo, tests). Production enrols one key per AP.
    command_master_key: SecretStr = SecretStr("change-me-command-master-key")
    mqtt: MqttSettings = MqttSettings()
    database: DatabaseSettings = DatabaseSettings()
    portal: PortalSettings = PortalSettings()
    sessions: SessionSettings = SessionSettings()
    ap_config: ApConfigSettings = ApConfigSettings()
    dashboard: DashboardSettings = DashboardSettings()
    stats: StatsSettings = StatsSettings()
    legal: LegalSettings = LegalSettings()
    radius: RadiusSettings = RadiusSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file; the file's content arrives as init kwargs.
        return (env_settings, init_settings)


class Problem(BaseModel):
    """One thing wrong in a configuration file, for humans."""

    model_config = ConfigDict(frozen=True)
    path: str
    message: str


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` says why, field by field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


def _explain(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown setting (check its spelling and its [section])"
    if kind == "missing":
        return "required setting is missing"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def _problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(file)"
        out.append(Problem(path=path, message=_explain(dict(err))))
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError([Problem(path="(file)", message=f"no such file: {path}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(path="(file)", message=f"not valid TOML: {exc}")]) from exc
    except OSError as exc:
        raise ConfigError([Problem(path="(file)", message=f"cannot read: {exc}")]) from exc


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load the settings from ``path`` (TOML) and the environment.

    Raises:
        ConfigError: with every problem found, each with its field path.
    """
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from exc


def check_file(path: Path) -> list[Problem]:
    """Every problem in a controller or agent configuration file (empty: all good)."""
    data = _read_toml(path)
    if "agent" in data and len(data) == 1:
        from agents.config import AgentConfigError, parse_agent_config

        try:
            parse_agent_config(data)
        except AgentConfigError as exc:
            return [Problem(path=p, message=m) for p, m in exc.problems]
        return []
    try:
        Settings(**data)
    except ValidationError as exc:
        return _problems(exc)
    return []


def settings_or_exit(path: str | None) -> Settings:
    """Load the settings for a command; on problems print them plainly and exit 2."""
    import sys

    try:
        return load_settings(Path(path) if path else None)
    except ConfigError as exc:
        print("configuration invalide / invalid configuration:", file=sys.stderr)
        for p in exc.problems:
            print(f"  {p.path}: {p.message}", file=sys.stderr)
        raise SystemExit(2) from exc
