"""RFC 3161 time-stamps of the daily heads, against a real TSA: ``openssl ts -reply``.

The TSA is OpenSSL's own implementation behind a small HTTP front (stdlib
``http.server``) on loopback, with a CA and a TSA certificate made for the test.
"""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.legal.errors import LegalError
from controller.legal.store import LegalStore, day_of
from controller.legal.timestamps import (
    build_request,
    parse_status,
    request_timestamp,
    timestamp_days,
    verify_token,
)
from tests.controller.legal.conftest import T0, record
from tests.testbed import free_port, require

TSA_CNF = """[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.crt
certs = $dir/ca.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha256
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local TSA: (URL, CA certificate file)."""
    if shutil.which("openssl") is None:
        require("openssl (Debian package openssl; tests/run.sh installs it)")
    d = tmp_path / "tsa"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=borne test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        cwd=d,
    )
    _openssl("req", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=borne TSA", cwd=d)
    (d / "ext.cnf").write_text(
        "extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "tsa.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tsa.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    (d / "tsaserial").write_text("01\n")
    (d / "tsa.cnf").write_text(TSA_CNF.format(dir=d))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            out = subprocess.run(
                [
                    "openssl",
                    "ts",
                    "-reply",
                    "-config",
                    str(d / "tsa.cnf"),
                    "-queryfile",
                    "/dev/stdin",
                    "-out",
                    "/dev/stdout",
                ],
                input=query,
                capture_output=True,
                timeout=30,
                check=False,
            )
            self.send_response(200 if out.returncode == 0 else 500)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(out.stdout)))
            self.end_headers()
            self.wfile.write(out.stdout)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output quiet; errors surface as failed verifications

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="tsa", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa", d / "ca.crt"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_request_is_what_openssl_reads() -> None:
    """The DER request parses with openssl as a SHA-256 imprint asking for the certificate."""
    if shutil.which("openssl") is None:
        require("openssl")
    out = subprocess.run(
        ["openssl", "ts", "-query", "-in", "/dev/stdin", "-text"],
        input=build_request(bytes(range(32)), 2**62 + 5),
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    assert "Hash Algorithm: sha256" in out and "Certificate required: yes" in out
    assert "00 01 02 03" in out


def test_sealed_days_are_time_stamped_and_verified(
    store: LegalStore, tsa: tuple[str, Path]
) -> None:
    """Each sealed day gets one token that openssl verifies against its head; a changed
    head no longer matches its token; the open day is not stamped."""
    url, ca = tsa
    store.append([(1, record(1))], T0)
    store.append([(2, record(2))], T0 + 86400)
    assert timestamp_days(store, url) == [day_of(T0)]
    assert timestamp_days(store, url) == []
    assert verify_token(store, day_of(T0), ca) is None
    heads = store.directory / day_of(T0) / "heads.jsonl"
    heads.write_bytes(heads.read_bytes().replace(b'"size":1', b'"size":2'))
    problem = verify_token(store, day_of(T0), ca)
    assert problem is not None and problem.startswith("time-stamp does not match")


def test_refusals_and_garbage_are_errors(tsa: tuple[str, Path]) -> None:
    """A non-TSA answer or an unreachable TSA is a LegalError, not a crash."""
    url, _ = tsa
    with pytest.raises(LegalError):
        request_timestamp(f"http://127.0.0.1:{free_port()}/", bytes(32), timeout=5)
    with pytest.raises(LegalError):
        request_timestamp(url.replace("/tsa", "/missing"), b"short digest", timeout=5)
    with pytest.raises(ValueError):
        parse_status(b"\x04\x00")
    assert parse_status(bytes.fromhex("30053003020102")) == 2


def test_cli_timestamps_and_verifies_the_tokens(
    tmp_path: Path, tsa: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`borne legal timestamp` stamps the sealed day; `verify --tsa-ca` accepts it, then
    names the day whose head no longer matches its token."""
    from controller.cli import main
    from controller.config import load_settings
    from controller.legal.consumer import open_store

    url, ca = tsa
    conf = tmp_path / "borne.toml"
    conf.write_text(
        f'[legal]\ndirectory = "{tmp_path / "legal"}"\n'
        f'master_key_file = "{tmp_path / "master.key"}"\n'
        f'signing_key_file = "{tmp_path / "signing.pem"}"\n'
    )
    c = ["-c", str(conf)]
    assert main(["legal", "init", *c]) == 0
    store = open_store(load_settings(conf).legal)
    store.append([(1, record(1))], T0)
    store.append([(2, record(2))], T0 + 86400)
    store.close()
    capsys.readouterr()
    assert main(["legal", "timestamp", "--tsa", url, *c]) == 0
    assert capsys.readouterr().out.strip() == f"horodaté / time-stamped {day_of(T0)}"
    assert main(["legal", "verify", "--tsa-ca", str(ca), *c]) == 0
    (tmp_path / "legal" / day_of(T0) / "head.tsr").write_bytes(
        (tmp_path / "legal" / day_of(T0) / "head.tsr").read_bytes()[:-40] + bytes(40)
    )
    assert main(["legal", "verify", "--tsa-ca", str(ca), *c]) == 1
    assert f"TAMPERED {day_of(T0)}: time-stamp" in capsys.readouterr().out
