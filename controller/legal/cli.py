"""``borne legal ...``: keys, verification, purge, holds and requisitions from a shell.

The person acting is the Unix login running the command (``getpass.getuser()``): the
two-person rule is as strong as the separation of the officers' accounts on the
controller host. Messages are in French, then English.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _settings(args: argparse.Namespace) -> Any:
    from controller.config import ConfigError, load_settings

    try:
        return load_settings(Path(args.config) if args.config else None).legal
    except ConfigError as exc:
        for p in exc.problems:
            print(f"configuration : {p.path}: {p.message}", file=sys.stderr)
        raise SystemExit(2) from exc


def _time(text: str) -> float:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"date ISO 8601 attendue / ISO 8601 time expected: {text!r}"
        ) from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _store(args: argparse.Namespace, *, read_only: bool = False) -> Any:
    from controller.legal.consumer import open_store

    return open_store(_settings(args), read_only=read_only)


def _run(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from controller.legal.errors import LegalError

        try:
            return int(fn(args))
        except LegalError as exc:
            print(f"borne legal : {exc}", file=sys.stderr)
            return 2

    return wrapped


def _cmd_init(args: argparse.Namespace) -> int:
    from controller.legal.keys import (
        MasterKey,
        generate_signing_key,
        load_signing_key,
        public_key_bytes,
    )

    s = _settings(args)
    Path(s.directory).mkdir(parents=True, exist_ok=True)
    if s.master_key_provider == "file" and not Path(s.master_key_file).exists():
        path = Path(s.master_key_file)
        path.touch(mode=0o600)
        path.write_text(MasterKey.new_text() + "\n")
        print(f"clé maîtresse créée / master key written: {path}")
    if Path(s.signing_key_file).exists():
        pub = load_signing_key(Path(s.signing_key_file)).public_key()
    else:
        pub = generate_signing_key(Path(s.signing_key_file))
        print(f"clé de signature créée / signing key written: {s.signing_key_file}")
    print(
        f"clé publique (à conserver hors de ce serveur) / public key: {public_key_bytes(pub).hex()}"
    )
    return 0


def _public_key(args: argparse.Namespace) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from controller.legal.keys import load_signing_key

    if args.public_key:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.public_key))
    return load_signing_key(Path(_settings(args).signing_key_file)).public_key()


def _cmd_verify(args: argparse.Namespace) -> int:
    store = _store(args, read_only=True)
    days = [args.day] if args.day else store.days()
    problems = store.verify(_public_key(args), days)
    from controller.legal.requisitions import Journal

    journal = Journal(store.directory / "journal.jsonl").verify()
    stamps = []
    if args.tsa_ca:
        from controller.legal.timestamps import verify_token

        for day in days:
            why = verify_token(store, day, Path(args.tsa_ca))
            if why is not None and why != "no time-stamp":
                stamps.append(f"{day}: {why}")
    for p in problems:
        print(f"ALTÉRÉ / TAMPERED {p}")
    for st in stamps:
        print(f"ALTÉRÉ / TAMPERED {st}")
    for j in journal:
        print(f"ALTÉRÉ / TAMPERED journal {j}")
    if problems or journal or stamps:
        return 1
    print(f"intègre / intact: {len(days)} jour(s)/day(s), journal OK")
    return 0


def _cmd_timestamp(args: argparse.Namespace) -> int:
    from controller.legal.timestamps import timestamp_days

    for day in timestamp_days(_store(args, read_only=True), args.tsa):
        print(f"horodaté / time-stamped {day}")
    return 0


def _cmd_seal(args: argparse.Namespace) -> int:
    from controller.legal.store import day_of

    store = _store(args)
    for day in store.seal_before(day_of(time.time())):
        print(f"scellé / sealed {day}")
    return 0


def _cmd_purge(args: argparse.Namespace) -> int:
    from controller.legal.retention import purge

    now = args.now if args.now is not None else time.time()
    for st in purge(_store(args), _settings(args), now):
        print(f"effacé / shredded {st['day']}: {', '.join(sorted(st['destroyed']))}")
    return 0


def _cmd_hold(args: argparse.Namespace) -> int:
    from controller.legal import retention

    store = _store(args)
    if args.hold_command == "add":
        n = retention.place_hold(store, args.name, args.day, args.record)
        print(f"gel / hold {args.name}: {n} enregistrement(s)/record(s)")
    elif args.hold_command == "release":
        retention.release_hold(store, args.name)
        print(f"gel levé / hold released: {args.name}")
    else:
        for name in retention.list_holds(store):
            print(name)
    return 0


def _query(args: argparse.Namespace) -> Any:
    from controller.legal.requisitions import Query

    start = args.at if args.at is not None else args.start
    end = args.at if args.at is not None else args.end
    if start is None or end is None:
        raise SystemExit("--at, ou --from et --to / --at, or --from and --to")
    if args.public:
        if args.port is None:
            raise SystemExit("--public demande --port / --public needs --port")
        return Query("public", args.public, start, end, port=args.port)
    if args.private:
        if not args.gateway:
            raise SystemExit("--private demande --gateway / --private needs --gateway")
        return Query("private", args.private, start, end, gateway=args.gateway)
    if args.mac:
        return Query("mac", args.mac.lower(), start, end)
    return Query("user", args.user, start, end)


def _cmd_requisition(args: argparse.Namespace) -> int:
    from controller.legal.requisitions import Requisitions

    reqs = Requisitions(_store(args))
    actor, now = getpass.getuser(), time.time()
    cmd = args.req_command
    if cmd == "add":
        reqs.register(
            args.reference,
            args.authority,
            args.basis,
            args.scope,
            args.start,
            args.end,
            args.received,
            actor,
            now,
        )
        print(f"réquisition enregistrée / registered: {args.reference}")
    elif cmd == "approve":
        n = reqs.approve(args.reference, actor, now)
        print(f"approuvée par / approved by {actor} ({n}/2)")
    elif cmd == "list":
        for req in reqs.all().values():
            state = "close" if req.closed else f"{len(set(req.approvals))}/2"
            print(f"{req.reference}\t{req.authority}\t{req.legal_basis}\t{state}")
    elif cmd == "close":
        reqs.close(args.reference, actor, now)
    elif cmd == "search":
        for f in reqs.search(args.reference, actor, _query(args), now):
            r = f.record
            print(
                f"{r.session_id}\t{r.client_mac}\t{r.private_ip}\t{r.public_ip or ''}"
                f"\t{r.port_start or ''}-{r.port_end or ''}\t{r.gateway}\t{r.start_ms}"
                f"\t{r.stop_ms or ''}\t{f.day}#{f.seq}"
            )
    else:
        for p in reqs.export(args.reference, actor, _query(args), Path(args.out), now):
            print(p)
    return 0


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")


def register(subparsers: Any) -> None:
    """Add ``borne legal ...`` to the ``borne`` command."""
    legal = subparsers.add_parser(
        "legal", help="journal légal de conservation / legal retention log"
    )
    sub = legal.add_subparsers(dest="legal_command", required=True)

    p = sub.add_parser("init", help="créer les clés / create the keys")
    _config(p)
    p.set_defaults(func=_run(_cmd_init))

    p = sub.add_parser("verify", help="vérifier l'intégrité / check integrity")
    _config(p)
    p.add_argument("--day", help="YYYY-MM-DD (défaut : tous / default: all)")
    p.add_argument("--public-key", help="clé publique Ed25519 en hexadécimal / hex public key")
    p.add_argument("--tsa-ca", help="certificat de l'AC de l'horodatage / TSA CA certificate")
    p.set_defaults(func=_run(_cmd_verify))

    p = sub.add_parser("timestamp", help="horodater les jours scellés (RFC 3161) / time-stamp")
    _config(p)
    p.add_argument("--tsa", required=True, help="URL de l'autorité d'horodatage / TSA URL")
    p.set_defaults(func=_run(_cmd_timestamp))

    p = sub.add_parser("seal", help="sceller les jours passés / seal past days")
    _config(p)
    p.set_defaults(func=_run(_cmd_seal))

    p = sub.add_parser("purge", help="effacer ce qui a dépassé la durée / purge expired days")
    _config(p)
    p.add_argument("--now", type=_time, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_run(_cmd_purge))

    hold = sub.add_parser("hold", help="gels de données / legal holds")
    hs = hold.add_subparsers(dest="hold_command", required=True)
    for name in ("add", "release", "list"):
        h = hs.add_parser(name)
        _config(h)
        if name != "list":
            h.add_argument("name")
        if name == "add":
            h.add_argument("--day", required=True)
            h.add_argument("--record", type=int, nargs="+", required=True)
        h.set_defaults(func=_run(_cmd_hold))

    req = sub.add_parser("requisition", help="réquisitions judiciaires / judicial requisitions")
    rs = req.add_subparsers(dest="req_command", required=True)
    p = rs.add_parser("add", help="enregistrer / register")
    _config(p)
    p.add_argument("reference")
    p.add_argument("--authority", required=True, help="autorité requérante / authority")
    p.add_argument("--basis", required=True, help="base légale (CPP 60-1...) / legal basis")
    p.add_argument("--scope", required=True, help="objet / scope")
    p.add_argument("--from", dest="start", type=_time, required=True)
    p.add_argument("--to", dest="end", type=_time, required=True)
    p.add_argument("--received", required=True, help="date de réception / date received")
    p.set_defaults(func=_run(_cmd_requisition))
    for name in ("approve", "close"):
        p = rs.add_parser(name)
        _config(p)
        p.add_argument("reference")
        p.set_defaults(func=_run(_cmd_requisition))
    p = rs.add_parser("list")
    _config(p)
    p.set_defaults(func=_run(_cmd_requisition))
    for name in ("search", "export"):
        p = rs.add_parser(name)
        _config(p)
        p.add_argument("reference")
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--public", help="IP publique / public IP (avec --port)")
        what.add_argument("--private", help="IP privée / private IP (avec --gateway)")
        what.add_argument("--mac")
        what.add_argument("--user", help="identifiant ou ticket / user or voucher id")
        p.add_argument("--port", type=int)
        p.add_argument("--gateway")
        p.add_argument("--at", type=_time)
        p.add_argument("--from", dest="start", type=_time)
        p.add_argument("--to", dest="end", type=_time)
        if name == "export":
            p.add_argument("--out", required=True, help="dossier de sortie / output folder")
        p.set_defaults(func=_run(_cmd_requisition))
