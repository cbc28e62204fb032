"""apply_config on OpenWrt: the UCI writer (``uci batch`` + ``uci commit``).

OpenWrt's ``uci`` is not packaged in Debian and cannot be built here, so these tests run
a **fake** ``uci`` (:data:`FAKE_UCI`, a Python script written by the test): it keeps
OpenWrt-format files (``config``/``option``/``list`` lines) in a directory as the
committed configuration, pending changes beside them, and implements ``show``, ``get``,
``batch`` (``set``, ``add_list``, ``del_list``, ``delete``, ``commit``) and ``commit``
with uci's quoting rules (single quotes, ``'\\''``); every call is logged. The restart
commands are real programs (shell scripts counting their runs). The expected batch text
is built from openNDS's documented UCI option names (``/etc/config/opennds`` of openNDS
9.10, its "Walled Garden" documentation) and OpenWrt's ``dhcp_option_force`` list.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from agents._apply import ConfigApplier
from agents._uci import (
    Section,
    UciError,
    detect_writer,
    dhcp_batch,
    find_dhcp_section,
    opennds_batch,
    parse_show,
    quote,
)
from agents.config import AgentConfigError, parse_agent_config
from agents.contract import ApplyConfigArgs
from agents.gateway import ConfigTargets, GatewayError, NdsctlGateway, config_targets
from tests.testbed import MosquittoBroker

URL = "https://portail.example/capport/api/ap-46201-04"
SETTINGS = ApplyConfigArgs(
    version=1,
    session_minutes=90,
    up_kbps=2000,
    down_kbps=8000,
    up_quota_kb=100_000,
    down_quota_kb=500_000,
    walled_garden=["10.46.0.2", "Tourisme-Lot.example", "192.0.2.0/24", "meteo.example"],
    walled_garden_ports=[443],
    fas_remote_ip="10.46.2.1",
    fas_port=8080,
    fas_path="/fas/",
    capport_url=URL,
)

# An OpenWrt device as installed: openNDS's package configuration (abridged) with an
# operator's own pre-login rule, and the default dhcp and network configurations.
OPENNDS_CONF = """\
config opennds
\toption enabled '1'
\toption fwhook_enabled '1'
\toption gatewayinterface 'br-lan'
\toption faskey 'secret-shared-with-the-portal'
\toption sessiontimeout '1440'
\tlist users_to_router 'allow tcp port 53'
\tlist preauthenticated_users 'allow udp port 123 to 10.46.0.9'
"""
DHCP_CONF = """\
config dnsmasq
\toption domainneeded '1'
\toption leasefile '/tmp/dhcp.leases'

config dhcp 'lan'
\toption interface 'lan'
\toption start '100'
\tlist dhcp_option '6,10.46.1.1'

config dhcp 'wan'
\toption interface 'wan'
\toption ignore '1'
"""
NETWORK_CONF = """\
config interface 'loopback'
\toption device 'lo'

config device
\toption name 'br-lan'
\toption type 'bridge'

config interface 'lan'
\toption device 'br-lan'
\toption proto 'static'

config interface 'wan'
\toption device 'eth1'
"""

FAKE_UCI = r'''#!{python}
"""A fake uci (tests only): OpenWrt-format files in CONFDIR, pending changes in SAVEDIR."""
import json, os, shlex, sys

CONFDIR, SAVEDIR, LOG, MODE = {confdir!r}, {savedir!r}, {log!r}, {mode!r}


def load_file(pkg):
    path = os.path.join(CONFDIR, pkg)
    if not os.path.exists(path):
        return None
    sections = []
    for line in open(path):
        tokens = shlex.split(line, comments=True)
        if not tokens:
            continue
        if tokens[0] == "config":
            sections.append({{"name": tokens[2] if len(tokens) > 2 else None,
                             "type": tokens[1], "options": {{}}}})
        elif tokens[0] == "option":
            sections[-1]["options"][tokens[1]] = tokens[2]
        elif tokens[0] == "list":
            sections[-1]["options"].setdefault(tokens[1], []).append(tokens[2])
    return sections


def q(value):
    return "'" + value.replace("'", "'\\''") + "'"


def save_file(pkg, sections):
    out = []
    for s in sections:
        out.append("config " + s["type"] + (" " + q(s["name"]) if s["name"] else ""))
        for k, v in s["options"].items():
            kind = "list " if isinstance(v, list) else "option "
            for item in (v if isinstance(v, list) else [v]):
                out.append("\t" + kind + k + " " + q(item))
        out.append("")
    with open(os.path.join(CONFDIR, pkg), "w") as fh:
        fh.write("\n".join(out))


def pending_path(pkg):
    return os.path.join(SAVEDIR, pkg + ".json")


def load(pkg):
    if os.path.exists(pending_path(pkg)):
        return json.load(open(pending_path(pkg)))
    return load_file(pkg)


def labels(sections):
    seen, out = {{}}, []
    for s in sections:
        i = seen.get(s["type"], 0)
        seen[s["type"]] = i + 1
        out.append((s["name"] or "@%s[%d]" % (s["type"], i), "@%s[%d]" % (s["type"], i)))
    return out


def find(sections, ref):
    for s, (label, index) in zip(sections, labels(sections)):
        if ref in (label, index):
            return s
    raise KeyError(ref)


def fail(msg):
    sys.stderr.write("uci: " + msg + "\n")
    sys.exit(1)


def show(pkg):
    sections = load(pkg)
    if sections is None:
        fail("Entry not found")
    for s, (label, _) in zip(sections, labels(sections)):
        print("%s.%s=%s" % (pkg, label, s["type"]))
        for k, v in s["options"].items():
            items = v if isinstance(v, list) else [v]
            print("%s.%s.%s=%s" % (pkg, label, k, " ".join(q(x) for x in items)))


def run(cmd, arg, state):
    key, _, value = arg.partition("=")
    pkg, _, rest = key.partition(".")
    if cmd == "commit":
        sections = state.pop(pkg, None) or load(pkg)
        if sections is not None:
            save_file(pkg, sections)
        if os.path.exists(pending_path(pkg)):
            os.unlink(pending_path(pkg))
        return
    if pkg not in state:
        state[pkg] = load(pkg)
        if state[pkg] is None:
            raise KeyError(pkg)
    sec_ref, _, opt = rest.partition(".")
    section = find(state[pkg], sec_ref)
    opts = section["options"]
    if cmd == "set":
        opts[opt] = value
    elif cmd == "add_list":
        current = opts.get(opt, [])
        opts[opt] = (current if isinstance(current, list) else [current]) + [value]
    elif cmd == "del_list":
        opts[opt] = [v for v in opts[opt] if v != value]
        if not opts[opt]:
            del opts[opt]
    elif cmd == "delete":
        del opts[opt]
    else:
        raise KeyError(cmd)


def main(argv):
    stdin = sys.stdin.read() if argv[:1] == ["batch"] else ""
    with open(LOG, "a") as fh:
        fh.write(json.dumps({{"argv": argv, "stdin": stdin}}) + "\n")
    if MODE == "fail":
        fail("I/O error")
    if argv[0] == "show":
        show(argv[1])
    elif argv[0] == "get":
        pkg, sec_ref, opt = argv[1].split(".")
        try:
            v = find(load(pkg), sec_ref)["options"][opt]
        except (KeyError, TypeError):
            fail("Entry not found")
        print(" ".join(v) if isinstance(v, list) else v)
    elif argv[0] == "batch":
        if MODE == "ignore":
            return
        state = {{}}
        for line in stdin.splitlines():
            tokens = shlex.split(line)
            if not tokens:
                continue
            try:
                run(tokens[0], tokens[1], state)
            except (KeyError, IndexError):
                fail("Entry not found: " + line)
        for pkg, sections in state.items():
            with open(pending_path(pkg), "w") as fh:
                json.dump(sections, fh)
    elif argv[0] == "commit":
        run("commit", argv[1], {{}})
    else:
        fail("unknown command")


main(sys.argv[1:])
'''


@dataclasses.dataclass
class Device:
    """A fake OpenWrt device: the uci program, its files, restart counters."""

    uci: str
    confdir: Path
    log: Path
    nds_runs: Path
    dns_runs: Path
    nds_restart: str
    dns_restart: str

    def conf(self, package: str) -> str:
        return (self.confdir / package).read_text()

    def calls(self, command: str) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        found = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in found if c["argv"][0] == command]

    def runs(self) -> tuple[int, int]:
        def count(p: Path) -> int:
            return len(p.read_text().splitlines()) if p.exists() else 0

        return count(self.nds_runs), count(self.dns_runs)

    def gateway(self, dhcp_section: str = "") -> NdsctlGateway:
        return NdsctlGateway(
            "ndsctl",
            targets=ConfigTargets(
                opennds_restart_cmd=self.nds_restart,
                dnsmasq_restart_cmd=self.dns_restart,
                writer="uci",
                uci=self.uci,
                uci_dhcp_section=dhcp_section,
            ),
        )


def make_device(tmp_path: Path, mode: str = "") -> Device:
    confdir, savedir = tmp_path / "etc-config", tmp_path / "uci-save"
    confdir.mkdir(exist_ok=True)
    savedir.mkdir(exist_ok=True)
    for name, text in (("opennds", OPENNDS_CONF), ("dhcp", DHCP_CONF), ("network", NETWORK_CONF)):
        if not (confdir / name).exists():
            (confdir / name).write_text(text)
    log = tmp_path / f"uci{mode}.log"
    uci = tmp_path / f"uci{mode}"
    uci.write_text(
        FAKE_UCI.format(
            python=sys.executable,
            confdir=str(confdir),
            savedir=str(savedir),
            log=str(log),
            mode=mode,
        )
    )
    uci.chmod(0o755)
    scripts = []
    for name in ("nds", "dns"):
        script = tmp_path / f"{name}-restart.sh"
        script.write_text(f'#!/bin/sh\necho restarted >> "{tmp_path / (name + "-runs")}"\n')
        script.chmod(0o755)
        scripts.append(str(script))
    return Device(str(uci), confdir, log, tmp_path / "nds-runs", tmp_path / "dns-runs", *scripts)


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return make_device(tmp_path)


def shown(device: Device, package: str) -> list[Section]:
    import subprocess

    out = subprocess.run([device.uci, "show", package], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return parse_show(out.stdout)


# --------------------------------------------------------------------------- rendering


def test_the_opennds_batch_matches_openndss_documented_options(device: Device) -> None:
    """Golden batch: openNDS 9.10's UCI names, only what differs from the device."""
    got = opennds_batch(SETTINGS, shown(device, "opennds"))
    nds = "opennds.@opennds[0]"
    assert got == [
        f"set {nds}.sessiontimeout='90'",
        f"set {nds}.uploadrate='2000'",
        f"set {nds}.downloadrate='8000'",
        f"set {nds}.uploadquota='100000'",
        f"set {nds}.downloadquota='500000'",
        f"set {nds}.dhcp_default_url_enable='0'",
        f"set {nds}.fasremoteip='10.46.2.1'",
        f"set {nds}.fasport='8080'",
        f"set {nds}.faspath='/fas/'",
        f"set {nds}.fas_secure_enabled='1'",
        f"add_list {nds}.walledgarden_fqdn_list='meteo.example tourisme-lot.example'",
        f"add_list {nds}.walledgarden_port_list='443'",
        f"add_list {nds}.preauthenticated_users='allow tcp port 443 to 10.46.0.2'",
        f"add_list {nds}.preauthenticated_users='allow tcp port 443 to 192.0.2.0/24'",
    ]
    # The faskey is the operator's: never in a batch.
    assert not any("faskey" in line for line in got)


def test_the_dhcp_batch_sets_option_114_on_the_lan_and_the_walled_garden_ipset(
    device: Device,
) -> None:
    got = dhcp_batch(SETTINGS, shown(device, "dhcp"), "lan")
    assert got == [
        f"add_list dhcp.lan.dhcp_option_force='114,\"{URL}\"'",
        "add_list dhcp.@dnsmasq[0].ipset='/meteo.example/tourisme-lot.example/walledgarden'",
    ]


def test_only_what_differs_is_in_the_batch() -> None:
    sections = parse_show(
        "opennds.@opennds[0]=opennds\n"
        "opennds.@opennds[0].sessiontimeout='90'\n"
        "opennds.@opennds[0].walledgarden_fqdn_list='old.example'\n"
        "opennds.@opennds[0].preauthenticated_users='allow tcp port 443 to 10.9.9.9' "
        "'allow udp port 53'\n"
    )
    args = ApplyConfigArgs(version=2, session_minutes=90)
    got = opennds_batch(args, sections)
    nds = "opennds.@opennds[0]"
    assert f"set {nds}.sessiontimeout='90'" not in got
    # The walled garden is the controller's: its host names and address rules go; the
    # operator's rule of another shape stays.
    assert f"delete {nds}.walledgarden_fqdn_list" in got
    assert f"del_list {nds}.preauthenticated_users='allow tcp port 443 to 10.9.9.9'" in got
    assert not any("port 53" in line for line in got)


def test_the_idle_timeout_is_set_when_given_and_left_alone_otherwise() -> None:
    nds = "opennds.@opennds[0]"
    sections = parse_show(f"{nds}=opennds\n{nds}.authidletimeout='45'\n")
    idle = ApplyConfigArgs(version=2, idle_timeout_minutes=15)
    assert f"set {nds}.authidletimeout='15'" in opennds_batch(idle, sections)
    done = parse_show(f"{nds}=opennds\n{nds}.authidletimeout='15'\n")
    assert not any("authidletimeout" in line for line in opennds_batch(idle, done))
    # 0 (or a controller that does not send it): the value in place stays.
    unset = ApplyConfigArgs(version=3)
    assert not any("authidletimeout" in line for line in opennds_batch(unset, sections))


def test_show_output_is_parsed_with_ucis_quoting() -> None:
    sections = parse_show(
        "dhcp.@dnsmasq[0]=dnsmasq\n"
        "dhcp.@dnsmasq[0].server='/lan/' 'it'\\''s'\n"
        "dhcp.lan=dhcp\n"
        "dhcp.lan.interface='lan'\n"
    )
    assert [(s.name, s.type) for s in sections] == [("@dnsmasq[0]", "dnsmasq"), ("lan", "dhcp")]
    assert sections[0].options["server"] == ["/lan/", "it's"]
    with pytest.raises(UciError):
        parse_show("not a uci line\n")


def test_values_are_quoted_and_control_characters_refused() -> None:
    assert quote("a b") == "'a b'"
    assert quote("it's") == "'it'\\''s'"
    with pytest.raises(ValueError, match="control character"):
        quote("x\nset opennds.@opennds[0].faskey=y")


def test_the_dhcp_section_is_the_one_of_openndss_gateway_interface(device: Device) -> None:
    opennds, network, dhcp = (shown(device, p) for p in ("opennds", "network", "dhcp"))
    assert find_dhcp_section(opennds, network, dhcp) == "lan"
    # By interface name, and by an older bridge definition (type bridge, br-<name>).
    by_name = parse_show(
        "opennds.@opennds[0]=opennds\nopennds.@opennds[0].gatewayinterface='wan'\n"
    )
    assert find_dhcp_section(by_name, network, dhcp) == "wan"
    old = parse_show("network.lan=interface\nnetwork.lan.type='bridge'\n")
    assert find_dhcp_section([], old, dhcp) == "lan"
    other = parse_show(
        "opennds.@opennds[0]=opennds\nopennds.@opennds[0].gatewayinterface='wlan9'\n"
    )
    with pytest.raises(UciError, match="uci_dhcp_section"):
        find_dhcp_section(other, network, dhcp)


# --------------------------------------------------------------------------- on the device


def test_the_same_settings_twice_restart_once(tmp_path: Path, device: Device) -> None:
    applier = ConfigApplier(device.gateway(), tmp_path / "state.json")
    assert applier.apply(SETTINGS) == "applied"
    assert device.runs() == (1, 1)
    # Committed, in the files openNDS and dnsmasq read at start.
    opennds = device.conf("opennds")
    for line in (
        "option sessiontimeout '90'",
        "option dhcp_default_url_enable '0'",
        "option fasremoteip '10.46.2.1'",
        "option fas_secure_enabled '1'",
        "list walledgarden_fqdn_list 'meteo.example tourisme-lot.example'",
        "list walledgarden_port_list '443'",
        "list preauthenticated_users 'allow tcp port 443 to 10.46.0.2'",
        # The operator's own lines stay.
        "option faskey 'secret-shared-with-the-portal'",
        "list preauthenticated_users 'allow udp port 123 to 10.46.0.9'",
    ):
        assert line in opennds, line
    dhcp = device.conf("dhcp")
    assert f"list dhcp_option_force '114,\"{URL}\"'" in dhcp
    assert "list dhcp_option '6,10.46.1.1'" in dhcp
    assert [c["argv"] for c in device.calls("commit")] == [
        ["commit", "dhcp"],
        ["commit", "opennds"],
    ]
    # The same version, then a new version of the same settings: no batch, no restart.
    assert applier.apply(SETTINGS) == "unchanged"
    assert applier.apply(dataclasses.replace(SETTINGS, version=2)) == "unchanged"
    assert device.runs() == (1, 1)
    assert len(device.calls("batch")) == 2
    # Only openNDS's settings change: only openNDS restarts.
    assert applier.apply(dataclasses.replace(SETTINGS, version=3, session_minutes=60)) == "applied"
    assert device.runs() == (2, 1)
    assert "option sessiontimeout '60'" in device.conf("opennds")


def test_a_walled_garden_change_leaves_nothing_stale(tmp_path: Path, device: Device) -> None:
    applier = ConfigApplier(device.gateway(), None)
    applier.apply(SETTINGS)
    smaller = dataclasses.replace(SETTINGS, version=2, walled_garden=["10.46.0.3"], capport_url="")
    assert applier.apply(smaller) == "applied"
    assert device.runs() == (2, 2)
    opennds, dhcp = device.conf("opennds"), device.conf("dhcp")
    assert "walledgarden_fqdn_list" not in opennds and "walledgarden_port_list" not in opennds
    assert "to 10.46.0.2" not in opennds and "to 192.0.2.0/24" not in opennds
    assert "list preauthenticated_users 'allow tcp port 443 to 10.46.0.3'" in opennds
    assert "list preauthenticated_users 'allow udp port 123 to 10.46.0.9'" in opennds
    assert "114," not in dhcp and "walledgarden" not in dhcp


def test_a_quote_in_the_url_goes_through_uci_intact(tmp_path: Path, device: Device) -> None:
    """RFC 3986 allows ``'`` in a path: it is quoted for uci, not refused, not mangled."""
    odd = dataclasses.replace(SETTINGS, capport_url="https://portail.example/capport/it's")
    assert ConfigApplier(device.gateway(), None).apply(odd) == "applied"
    assert shown(device, "dhcp")[1].options["dhcp_option_force"] == [
        '114,"https://portail.example/capport/it\'s"'
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"walled_garden": ["evil.example'\nset opennds.@opennds[0].faskey='x"]}, "walled_garden"),
        ({"walled_garden": ['evil"example']}, "walled_garden"),
        ({"walled_garden": ["evil.example' 'x"]}, "walled_garden"),
        ({"fas_path": "/fas/'\ncommit opennds"}, "fas_path"),
        ({"fas_remote_fqdn": "portal.example'"}, "fas_remote_fqdn"),
        ({"capport_url": "https://x.example/\nadd_list dhcp.lan.dhcp_option='3'"}, "capport_url"),
        ({"capport_url": 'https://x.example/"'}, "capport_url"),
    ],
)
def test_injection_attempts_are_refused_before_uci_runs(
    tmp_path: Path, device: Device, change: dict[str, object], problem: str
) -> None:
    applier = ConfigApplier(device.gateway(), None)
    with pytest.raises(GatewayError, match=f"bad settings: {problem}"):
        applier.apply(dataclasses.replace(SETTINGS, **change))  # type: ignore[arg-type]
    assert device.calls("batch") == [] and device.calls("show") == []
    assert device.conf("opennds") == OPENNDS_CONF


def test_a_failing_uci_is_an_error_and_the_next_push_forces(tmp_path: Path) -> None:
    broken = make_device(tmp_path, mode="fail")
    failing = ConfigApplier(broken.gateway(), tmp_path / "state.json")
    with pytest.raises(GatewayError, match="uci show dhcp exited 1: uci: I/O error"):
        failing.apply(SETTINGS)
    assert failing.version is None and broken.runs() == (0, 0)
    fixed = make_device(tmp_path)
    applier = ConfigApplier(fixed.gateway(), tmp_path / "state.json")
    assert applier.apply(SETTINGS) == "applied"
    assert fixed.runs() == (1, 1)


def test_values_that_did_not_take_are_an_error(tmp_path: Path) -> None:
    """A uci that accepts the batch but changes nothing: caught by reading back."""
    deaf = make_device(tmp_path, mode="ignore")
    with pytest.raises(GatewayError, match="uci dhcp: not applied after commit"):
        ConfigApplier(deaf.gateway(), None).apply(SETTINGS)


def test_a_failed_restart_is_retried_although_uci_already_holds_the_values(
    tmp_path: Path, device: Device
) -> None:
    gw = device.gateway()
    bad = tmp_path / "bad-restart.sh"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    gw.targets = dataclasses.replace(gw.targets, opennds_restart_cmd=str(bad))
    failing = ConfigApplier(gw, tmp_path / "state.json")
    with pytest.raises(GatewayError, match="openNDS restart exited 3"):
        failing.apply(SETTINGS)
    applier = ConfigApplier(device.gateway(), tmp_path / "state.json")
    assert applier.apply(SETTINGS) == "applied"
    assert device.runs()[0] == 1


def test_an_explicit_dhcp_section_is_used(tmp_path: Path, device: Device) -> None:
    ConfigApplier(device.gateway(dhcp_section="wan"), None).apply(SETTINGS)
    assert shown(device, "dhcp")[2].options["dhcp_option_force"] == [f'114,"{URL}"']
    with pytest.raises(GatewayError, match="no section 'guest'"):
        ConfigApplier(device.gateway(dhcp_section="guest"), None).apply(SETTINGS)


# --------------------------------------------------------------------------- configuration


def test_the_writer_is_detected_and_configured(tmp_path: Path) -> None:
    assert detect_writer("auto", str(tmp_path / "none")) == "files"
    (tmp_path / "uci").touch()
    assert detect_writer("auto", str(tmp_path / "uci")) == "uci"
    assert detect_writer("off", str(tmp_path / "uci")) == "off"
    base = {"ap_id": "ap-46201-04", "command_key": "k" * 32}
    cfg = parse_agent_config({"agent": {**base, "gateway_config": "uci"}})
    targets = config_targets(cfg)
    assert targets.writer == "uci"
    assert targets.opennds_restart_cmd == "/etc/init.d/opennds restart"
    assert targets.dnsmasq_restart_cmd == "/etc/init.d/dnsmasq restart"
    files = config_targets(parse_agent_config({"agent": {**base, "gateway_config": "files"}}))
    assert (files.writer, files.dnsmasq_restart_cmd) == ("files", "")
    with pytest.raises(AgentConfigError) as err:
        parse_agent_config(
            {"agent": {**base, "gateway_config": "yaml", "uci_dhcp_section": "lan'; x"}}
        )
    assert [p for p, _ in err.value.problems] == ["agent.gateway_config", "agent.uci_dhcp_section"]


def test_off_refuses_apply_config() -> None:
    gw = NdsctlGateway("ndsctl", targets=ConfigTargets(writer="off", opennds_config="/x"))
    with pytest.raises(GatewayError, match="configuration management is off"):
        ConfigApplier(gw, None).apply(SETTINGS)


# --------------------------------------------------------------------------- real agent


@pytest.mark.broker
def test_the_agent_acks_applied_then_unchanged_over_a_real_broker(
    mosquitto: MosquittoBroker, tmp_path: Path, device: Device
) -> None:
    """Same version twice through a real mosquitto: two acks, one restart of each daemon."""
    from tests.agents.test_apply import ApplyListener, run_agent

    listener = ApplyListener(mosquitto)
    _, stop, thread = run_agent(mosquitto, tmp_path, device.gateway())
    try:
        settings = SETTINGS
        listener.send("uci-1", settings)
        first = listener.next("ack")
        listener.send("uci-2", settings)
        second = listener.next("ack")
        assert (first["id"], first["ok"], first["result"]) == ("uci-1", True, "applied")
        assert (second["id"], second["ok"], second["result"]) == ("uci-2", True, "unchanged")
        assert device.runs() == (1, 1)
        listener.send("uci-3", dataclasses.replace(settings, walled_garden=["a'b.example"]))
        bad = listener.next("ack")
        assert (bad["ok"], bad["error"][:27]) == (False, "bad settings: walled_garden")
    finally:
        stop.set()
        thread.join(15)
        listener.close()
