"""The state database's tables (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Times are UTC seconds since the epoch as double precision, so that both engines store
and compare them the same way; byte counters are 64-bit. The schema changes only
through migrations in ``migrations/versions``; this module mirrors their result.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "access_points",
    "ap_configs",
    "ap_key_rotations",
    "ap_mqtt_logins",
    "ap_mqtt_logins_retired",
    "commands",
    "communes",
    "consumer_offsets",
    "dashboard_account_communes",
    "dashboard_accounts",
    "dashboard_commune_contacts",
    "dashboard_incidents",
    "dashboard_logins",
    "dashboard_reports",
    "metadata",
    "processed_messages",
    "session_events",
    "sessions",
    "stats_cells",
    "stats_days",
    "stats_optout",
]

metadata = sa.MetaData()

Time = sa.Float(precision=53)


def _serial_id() -> sa.Column[int]:
    """An auto-incremented 64-bit primary key (a plain INTEGER on SQLite, its rowid)."""
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


communes = sa.Table(
    "communes",
    metadata,
    sa.Column("insee", sa.String(5), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("lon", Time, nullable=True),
    sa.Column("lat", Time, nullable=True),
)

access_points = sa.Table(
    "access_points",
    metadata,
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("insee", sa.String(5), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("lon", Time, nullable=True),
    sa.Column("lat", Time, nullable=True),
    # The AP's own command key; NULL means "derived from the controller's master key".
    sa.Column("command_key", sa.String(200), nullable=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="unknown"),
    sa.Column("boot", sa.String(32), nullable=True),
    sa.Column("last_seen", Time, nullable=True),
    sa.Column("state_since", Time, nullable=True),
    sa.Column("agent_version", sa.String(32), nullable=True),
    sa.Column("clock_skew_s", Time, nullable=True),
    sa.Column("health", sa.Text, nullable=True),
    sa.Column("created_at", Time, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    _serial_id(),
    sa.Column("ap_id", sa.String(63), nullable=False),
    sa.Column("insee", sa.String(5), nullable=False),
    sa.Column("mac", sa.String(17), nullable=False),
    sa.Column("ip", sa.String(45), nullable=False),
    sa.Column("auth_method", sa.String(32), nullable=True),
    sa.Column("auth_ref", sa.String(64), nullable=True),
    sa.Column("boot", sa.String(32), nullable=True),
    # The gateway's own session start, in the AP's clock (not corrected for its skew).
    sa.Column("gw_session_start", Time, nullable=True),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("stopped_at", Time, nullable=True),
    sa.Column("up_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("down_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("terminate_cause", sa.String(32), nullable=True),
    sa.Column("backfilled", sa.Boolean, nullable=False, server_default=sa.false()),
    # Migration 0010: the NAT port block of the session (agents/_nat.py), None without NAT.
    sa.Column("public_ip", sa.String(45), nullable=True),
    sa.Column("port_start", sa.Integer, nullable=True),
    sa.Column("port_end", sa.Integer, nullable=True),
    sa.Index("ix_sessions_open", "ap_id", "mac", "stopped_at"),
    sa.Index("ix_sessions_started", "started_at"),
)

processed_messages = sa.Table(
    "processed_messages",
    metadata,
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("boot", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("received_at", Time, nullable=False, index=True),
)

commands = sa.Table(
    "commands",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("ap_id", sa.String(63), nullable=False, index=True),
    sa.Column("cmd", sa.String(32), nullable=False),
    sa.Column("mac", sa.String(17), nullable=True),
    sa.Column("purpose", sa.String(32), nullable=True),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("acked_at", Time, nullable=True),
    sa.Column("ok", sa.Boolean, nullable=True),
    sa.Column("error", sa.String(200), nullable=True),
)

# Transactional outbox: every start, update and stop of a session is recorded in the
# same transaction as the change itself; later pipelines (legal log, statistics) read
# it in order, each from its own offset, so none misses or repeats a change.
session_events = sa.Table(
    "session_events",
    metadata,
    _serial_id(),
    sa.Column("session_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("at", Time, nullable=False),
)

consumer_offsets = sa.Table(
    "consumer_offsets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)

# RADIUS (migration 0003): registered NAS clients (their nas_id is the sessions' ap_id),
# (NAS, Acct-Session-Id) -> session, one-time credentials, devices known for MAC
# authentication (keyed hash only), Disconnect/CoA requests and their answers.
nas_clients = sa.Table(
    "nas_clients",
    metadata,
    sa.Column("nas_id", sa.String(63), primary_key=True),
    sa.Column("address", sa.String(45), nullable=False, index=True),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("coa_port", sa.Integer, nullable=False, server_default="3799"),
    sa.Column("created_at", Time, nullable=False),
    # Migration 0013: the NAS's UAM secret (CoovaChilli uamsecret), None: [portal]'s.
    sa.Column("uam_secret", sa.String(200), nullable=True),
)

radius_sessions = sa.Table(
    "radius_sessions",
    metadata,
    sa.Column("nas_id", sa.String(63), primary_key=True),
    sa.Column("acct_session_id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("user_name", sa.String(64), nullable=True),
)

radius_credentials = sa.Table(
    "radius_credentials",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_sha256", sa.String(64), nullable=False),
    sa.Column("session_minutes", sa.Integer, nullable=True),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("used_at", Time, nullable=True),
    # Migration 0013: bound to one NAS and one device (keyed hash), with the login's limits.
    sa.Column("nas_id", sa.String(63), nullable=True),
    sa.Column("mac_hash", sa.String(64), nullable=True),
    sa.Column("up_kbps", sa.Integer, nullable=True),
    sa.Column("down_kbps", sa.Integer, nullable=True),
    sa.Column("quota_mb", sa.Integer, nullable=True),
)

radius_known_devices = sa.Table(
    "radius_known_devices",
    metadata,
    sa.Column("mac_hash", sa.String(64), primary_key=True),
    sa.Column("expires_at", Time, nullable=False),
    # Migration 0013: the legal texts accepted (scope: commune, "*", "" built-in).
    sa.Column("terms_scope", sa.String(5), nullable=True),
    sa.Column("terms_version", sa.String(32), nullable=True),
    sa.Column("accepted_at", Time, nullable=True),
)

radius_dynauth = sa.Table(
    "radius_dynauth",
    metadata,
    _serial_id(),
    sa.Column("nas_id", sa.String(63), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("acct_session_id", sa.String(64), nullable=True),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("answered_at", Time, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ok", sa.Boolean, nullable=True),
    sa.Column("error_cause", sa.Integer, nullable=True),
)

# Statistics (controller/stats): published aggregate cells only, never a device. The
# embedded statistics store; InfluxDB replaces it when configured.
_STATS_FIELDS = (
    "visitors",
    "randomised_visitors",
    "sessions",
    "repeat_visitors",
    "dwell_lt_5m",
    "dwell_5_15m",
    "dwell_15_30m",
    "dwell_30_60m",
    "dwell_1_2h",
    "dwell_ge_2h",
    "bytes_up",
    "bytes_down",
)
stats_cells = sa.Table(
    "stats_cells",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("scope", sa.String(10), primary_key=True),
    sa.Column("period", sa.String(4), primary_key=True),
    sa.Column("start", sa.BigInteger, primary_key=True),
    sa.Column("insee", sa.String(10), primary_key=True),
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("destination", sa.String(10), primary_key=True),
    sa.Column("day", sa.String(10), nullable=False, index=True),
    sa.Column("noised", sa.Boolean, nullable=False, server_default=sa.false()),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in _STATS_FIELDS),
)
# Days whose statistics are final (aggregated, written, their key destroyed).
stats_days = sa.Table(
    "stats_days",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("finalized_at", Time, nullable=False),
    sa.Column("sessions", sa.BigInteger, nullable=False),
    sa.Column("devices", sa.BigInteger, nullable=False),
    sa.Column("cells", sa.BigInteger, nullable=False),
    sa.Column("published", sa.BigInteger, nullable=False),
    sa.Column("opted_out", sa.BigInteger, nullable=False),
    sa.Column("epsilon", Time, nullable=True),
    sa.Column("k", sa.Integer, nullable=False),
)
# Devices not to be counted: keyed hashes of their MACs (never the MAC itself).
stats_optout = sa.Table(
    "stats_optout",
    metadata,
    sa.Column("mac_hash", sa.String(64), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
)
# MQTT logins of the access points, as mosquitto password-file hashes (controller.enroll).
ap_mqtt_logins = sa.Table(
    "ap_mqtt_logins",
    metadata,
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("username", sa.String(63), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", Time, nullable=False),
)
# Dashboard accounts (dashboards.accounts): argon2id password hashes, never a password.
dashboard_accounts = sa.Table(
    "dashboard_accounts",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(24), nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("totp_secret", sa.String(64), nullable=True),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", Time, nullable=False),
)
# The communes a commune or EPCI account may see.
dashboard_account_communes = sa.Table(
    "dashboard_account_communes",
    metadata,
    sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("dashboard_accounts.username", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("insee", sa.String(5), primary_key=True),
)
# Server-side login sessions: the cookie holds a random token, the table its SHA-256.
dashboard_logins = sa.Table(
    "dashboard_logins",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("dashboard_accounts.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("second_factor_ok", sa.Boolean, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)
# Hotspot incidents seen by the dashboards (down at, back up at): uptime and timeline.
dashboard_incidents = sa.Table(
    "dashboard_incidents",
    metadata,
    _serial_id(),
    sa.Column("ap_id", sa.String(63), nullable=False, index=True),
    sa.Column("down_at", Time, nullable=False, index=True),
    sa.Column("up_at", Time, nullable=True),
)
# Captive portal (migration 0006): voucher batches, vouchers (keyed hashes of the codes
# only), the devices that used them (keyed hashes), per-commune legal texts ("*" is the
# default of communes without their own) and proofs of their acceptance.
voucher_batches = sa.Table(
    "voucher_batches",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("insee", sa.String(5), nullable=True),
    sa.Column("note", sa.String(200), nullable=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("minutes", sa.Integer, nullable=False),
    sa.Column("quota_mb", sa.Integer, nullable=False, server_default="0"),
    sa.Column("up_kbps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("down_kbps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("max_devices", sa.Integer, nullable=False, server_default="1"),
)
vouchers = sa.Table(
    "vouchers",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("batch_id", sa.String(16), nullable=False, index=True),
    sa.Column("first_used_at", Time, nullable=True),
    sa.Column("devices", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revoked_at", Time, nullable=True),
)
voucher_uses = sa.Table(
    "voucher_uses",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("device_hash", sa.String(64), primary_key=True),
    sa.Column("ap_id", sa.String(63), nullable=False),
    sa.Column("used_at", Time, nullable=False),
)
portal_legal_texts = sa.Table(
    "portal_legal_texts",
    metadata,
    sa.Column("insee", sa.String(5), primary_key=True),
    sa.Column("version", sa.String(32), primary_key=True),
    sa.Column("published_at", Time, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
)
portal_consents = sa.Table(
    "portal_consents",
    metadata,
    _serial_id(),
    sa.Column("device_hash", sa.String(64), nullable=False),
    sa.Column("insee", sa.String(5), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("accepted_at", Time, nullable=False),
    sa.Column("ap_id", sa.String(63), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Index("ix_portal_consents_device", "device_hash", "insee", "version"),
)
# Reads by place and period (dashboards): presence and outgoing flows by place, incoming
# flows by destination.
sa.Index("ix_stats_cells_place", stats_cells.c.scope, stats_cells.c.insee, stats_cells.c.day)
sa.Index(
    "ix_stats_cells_destination",
    stats_cells.c.scope,
    stats_cells.c.destination,
    stats_cells.c.day,
)
# Monthly reports per commune, generated on schedule (dashboards.reports): gzip'd
# print-ready HTML, downloaded by the commune's accounts.
dashboard_reports = sa.Table(
    "dashboard_reports",
    metadata,
    sa.Column("insee", sa.String(5), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("generated_at", Time, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)
# A commune's contact details, kept by its manager on the dashboards (for the portal).
dashboard_commune_contacts = sa.Table(
    "dashboard_commune_contacts",
    metadata,
    sa.Column("insee", sa.String(5), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("phone", sa.String(32), nullable=False, server_default=""),
    sa.Column("email", sa.String(200), nullable=False, server_default=""),
    sa.Column("address", sa.String(500), nullable=False, server_default=""),
    sa.Column("hours", sa.String(500), nullable=False, server_default=""),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False),
)
# Identity data given at login by e-mail or SMS code (CPCE R10-13 I): kept only for the
# legal obligation, as keyed hashes, until keep_until (5 years), then deleted.
portal_identities = sa.Table(
    "portal_identities",
    metadata,
    _serial_id(),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("identity_hash", sa.String(64), nullable=False, index=True),
    sa.Column("device_hash", sa.String(64), nullable=False),
    sa.Column("insee", sa.String(5), nullable=False),
    sa.Column("ap_id", sa.String(63), nullable=False),
    sa.Column("logged_in_at", Time, nullable=False),
    sa.Column("keep_until", Time, nullable=False, index=True),
)
# Credential rotations (controller.enroll): the new command key until the AP confirms it
# (then in access_points.command_key), the old one until the end of the grace period;
# both NULL once forgotten.
ap_key_rotations = sa.Table(
    "ap_key_rotations",
    metadata,
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("new_key", sa.String(200), nullable=True),
    sa.Column("old_key", sa.String(200), nullable=True),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("grace_until", Time, nullable=False),
    sa.Column("confirmed_at", Time, nullable=True),
    sa.Column("finished_at", Time, nullable=True),
    sa.Column("command_id", sa.String(64), nullable=True),
)
# MQTT logins replaced by a rotation, still valid until the end of its grace period.
ap_mqtt_logins_retired = sa.Table(
    "ap_mqtt_logins_retired",
    metadata,
    sa.Column("username", sa.String(80), primary_key=True),
    sa.Column("ap_id", sa.String(63), nullable=False, index=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("valid_until", Time, nullable=False),
)
# Migration 0009: the gateway settings of each access point (controller.apconfig): the
# controller's version (raised when the settings change), the last push and its ack, and
# the version the agent reports in its status.
ap_configs = sa.Table(
    "ap_configs",
    metadata,
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("command_id", sa.String(64), nullable=True),
    sa.Column("pushed_at", Time, nullable=True),
    sa.Column("applied_version", sa.Integer, nullable=True),
    sa.Column("result", sa.String(200), nullable=True),
    sa.Column("acked_at", Time, nullable=True),
    sa.Column("reported_version", sa.Integer, nullable=True),
    sa.Column("reported_at", Time, nullable=True),
)
# Migration 0016: e-mail/SMS codes waiting to be typed (captive_portal._codestore: keyed
# hashes of the challenge id, the code and the device; the address or number until the
# code is used or expires) and session extensions waiting for their device
# (controller.portal_backend; the authorize arguments without the MAC).
portal_pending_codes = sa.Table(
    "portal_pending_codes",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("identity", sa.String(254), nullable=False),
    sa.Column("device_hash", sa.String(64), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("expires_at", Time, nullable=False, index=True),
    sa.Column("attempts_left", sa.Integer, nullable=False),
)
portal_pending_extensions = sa.Table(
    "portal_pending_extensions",
    metadata,
    sa.Column("ap_id", sa.String(63), primary_key=True),
    sa.Column("mac_hash", sa.String(64), primary_key=True),
    sa.Column("args", sa.Text, nullable=False),
    sa.Column("minutes", sa.Integer, nullable=False),
    sa.Column("deadline", Time, nullable=False, index=True),
)


def _account_key() -> sa.Column[str]:
    """The dashboard account a row belongs to, in its primary key (gone with it)."""
    return sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("dashboard_accounts.username", ondelete="CASCADE"),
        primary_key=True,
    )


# Migration 0018: monthly reports by e-mail (dashboards.reports). A commune account that
# asked for its communes' report, at its own address; and each report sent to an account
# (claimed before the send, so that a restart or a report made again never sends twice).
dashboard_report_subscriptions = sa.Table(
    "dashboard_report_subscriptions",
    metadata,
    _account_key(),
    sa.Column("insee", sa.String(5), primary_key=True),
    sa.Column("email", sa.String(200), nullable=False),
    sa.Column("created_at", Time, nullable=False),
)
dashboard_report_mails = sa.Table(
    "dashboard_report_mails",
    metadata,
    _account_key(),
    sa.Column("insee", sa.String(5), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("sent_at", Time, nullable=False),
)
