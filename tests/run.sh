#!/usr/bin/env bash
# Run the whole test suite on a Debian 12 machine, as root: tests/run.sh [pytest args...]
#
# Installs the Debian packages the real-peer tests need (skipped when every program is
# already there), selects the legacy iptables backend (openNDS 9.10 fails with nft),
# creates .venv, starts PostgreSQL with a "borne" role and a fresh database for the run, then
# runs pytest with BORNE_REQUIRE_ALL=1 so that a missing prerequisite fails instead of
# skipping. Mosquitto, openNDS, dnsmasq... are started by the test fixtures themselves.
# See tests/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf '[tests/run.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run me as root: I install packages, start PostgreSQL and build network namespaces (unit tests alone: .venv/bin/pytest -m 'not netns and not postgres and not broker and not browser')"

PACKAGES=(
    opennds iptables nftables dnsmasq busybox mosquitto mosquitto-clients postgresql
    iproute2 freeradius-utils freeradius chromium curl procps util-linux python3 python3-venv
    ca-certificates debootstrap influxdb victoria-metrics openssl poppler-utils npm
)

# One program (or file) per package, to decide whether apt is needed at all.
have_everything() {
    local prog
    for prog in opennds ndsctl dnsmasq busybox mosquitto mosquitto_pub mosquitto_sub \
        pg_ctlcluster psql ip ss radclient freeradius chromium curl nft pgrep unshare debootstrap \
        influxd victoria-metrics openssl pdftotext npm; do
        command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || { log "missing: $prog"; return 1; }
    done
    [ -x /usr/sbin/iptables-legacy ] || { log "missing: iptables-legacy"; return 1; }
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { log "missing: postgres server"; return 1; }
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || { log "missing: python3-venv"; return 1; }
}

if have_everything; then
    log "Debian packages already present: skipping apt-get"
else
    log "installing Debian packages: ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y "${PACKAGES[@]}"
fi

# openNDS 9.10 drives iptables; with the nft backend it fails (CHAIN_ADD failed).
for tool in iptables ip6tables; do
    if [ "$(readlink -f "/usr/sbin/$tool")" != "/usr/sbin/$tool-legacy" ]; then
        update-alternatives --set "$tool" "/usr/sbin/$tool-legacy"
    fi
done

# Python environment.
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.borne-dev-install
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    log "installing the project and its dev dependencies into .venv"
    .venv/bin/pip install --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$want" >"$stamp"
fi

# PostgreSQL: the Debian cluster, a "borne" role and an empty database for this run.
pg_version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
[ -n "$pg_version" ] || die "no PostgreSQL server under /usr/lib/postgresql"
if [ ! -d "/etc/postgresql/$pg_version/main" ]; then
    log "creating PostgreSQL $pg_version cluster main"
    pg_createcluster "$pg_version" main
fi
if ! pg_ctlcluster "$pg_version" main status >/dev/null 2>&1; then
    log "starting PostgreSQL $pg_version main"
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
fi
pg_port="$(pg_conftool -s "$pg_version" main show port 2>/dev/null || echo 5432)"
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$pg_port" || die "PostgreSQL does not answer on 127.0.0.1:$pg_port"

as_postgres() { (cd / && runuser -u postgres -- "$@"); }
as_postgres psql -q -v ON_ERROR_STOP=1 -p "$pg_port" -d postgres <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'borne') THEN
        CREATE ROLE borne LOGIN PASSWORD 'borne';
    ELSE
        ALTER ROLE borne LOGIN PASSWORD 'borne';
    END IF;
END
$$;
SQL
# A database of this run only, dropped at the end: a run never sees another's schema.
pg_db="borne_test_$$"
as_postgres dropdb --if-exists -p "$pg_port" "$pg_db"
as_postgres createdb -p "$pg_port" -O borne "$pg_db"
trap 'as_postgres dropdb --if-exists -p "$pg_port" "$pg_db" || true' EXIT

export BORNE_TEST_POSTGRES_URL="postgresql+asyncpg://borne:borne@127.0.0.1:${pg_port}/${pg_db}"
export BORNE_REQUIRE_ALL=1

log "running pytest $*"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    log "error: pytest collected no tests (exit 5): check the paths and -k/-m filters"
    exit 1
fi
exit "$rc"
