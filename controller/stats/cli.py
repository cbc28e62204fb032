"""``borne simulate`` and ``borne stats ...``: the statistics' command-line tools.

Messages are in French first, then English. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["register"]


def _settings(path: str | None) -> Any:
    from controller.config import settings_or_exit

    return settings_or_exit(path)


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"date AAAA-MM-JJ attendue / expected: {text!r}") from exc


async def _simulate(args: argparse.Namespace) -> int:
    from controller.stats._service import make_pipeline, make_store, record_day
    from controller.stats._sim import simulate_day
    from controller.stats._stores import BatchWriter, Influx1Store, StoreError
    from controller.storage import open_database

    settings = _settings(args.config)
    await asyncio.to_thread(ZoneInfo, settings.stats.timezone)  # file IO, off the loop
    db = await open_database(settings.database.url.get_secret_value())
    store = make_store(settings.stats, db)
    writer = BatchWriter(store, settings.stats.batch_size, settings.stats.buffer_cells)
    first = dt.date.fromisoformat(args.date)
    try:
        if isinstance(store, Influx1Store):
            await store.create_database()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(writer.run(), name="simulate.writer")
            for i in range(args.days):
                day = (first + dt.timedelta(days=i)).isoformat()
                sim = await asyncio.to_thread(simulate_day, day, scale=args.scale, seed=args.seed)
                pipeline = make_pipeline(settings.stats)
                for mac in sim.optout_macs:
                    pipeline.optout.add(mac)

                def feed(pipeline: Any = pipeline, sim: Any = sim) -> Any:
                    for s in sim.sessions:
                        pipeline.observe(
                            ap_id=s.ap_id, insee=s.insee, mac=s.mac, start=s.start,
                            stop=s.stop, up=s.up, down=s.down,
                        )  # fmt: skip
                    return pipeline.finalise(sim.day)

                report = await asyncio.to_thread(feed)
                writer.submit(report.protected.published)
                await record_day(db, report, settings.stats.k, settings.stats.epsilon)
                if args.truth:
                    out = Path(args.truth)
                    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
                    text = json.dumps(sim.truth(), indent=1, ensure_ascii=False)
                    await asyncio.to_thread((out / f"truth-{day}.json").write_text, text)
                print(
                    f"{day} : {report.sessions} sessions, {report.devices} appareils, "
                    f"{len(report.protected.published)} cellules publiées sur {report.cells} / "
                    f"{report.sessions} sessions, {report.devices} devices, "
                    f"{len(report.protected.published)} of {report.cells} cells published"
                )
            async with asyncio.timeout(args.write_timeout):
                await writer.drained()
            task.cancel()
    except (StoreError, TimeoutError) as exc:
        print(f"borne simulate : écriture impossible / cannot write: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.aclose()
        await db.aclose()
    print(f"écrit / written: {writer.written} cellules / cells ({settings.stats.store})")
    return 0


async def _export(args: argparse.Namespace) -> int:
    from controller.registry import lot_communes
    from controller.stats._export import communes_csv, flows_csv
    from controller.stats._service import make_store
    from controller.stats._stores import StoreError
    from controller.storage import open_database

    settings = _settings(args.config)
    await asyncio.to_thread(ZoneInfo, settings.stats.timezone)  # file IO, off the loop
    db = await open_database(settings.database.url.get_secret_value())
    store = make_store(settings.stats, db)
    try:
        cells = await store.read_day(args.day)
    except StoreError as exc:
        print(f"borne stats export : lecture impossible / cannot read: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.aclose()
        await db.aclose()
    names = {c.insee: c.name for c in await asyncio.to_thread(lot_communes)}
    text = flows_csv(cells, names) if args.flows else communes_csv(cells, names)
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, text, "utf-8")
    else:
        sys.stdout.write(text)
    return 0


async def _optout(args: argparse.Namespace) -> int:
    import time

    from controller.stats._pseudo import normalise_mac
    from controller.stats._service import record_optout
    from controller.storage import open_database

    settings = _settings(args.config)
    try:
        mac = normalise_mac(args.mac)
    except ValueError:
        print("adresse MAC invalide / invalid MAC address", file=sys.stderr)
        return 2
    db = await open_database(settings.database.url.get_secret_value())
    try:
        await record_optout(db, settings.stats, mac, time.time())
    finally:
        await db.aclose()
    print("appareil exclu des statistiques / device opted out of the statistics")
    return 0


def register(sub: Any) -> None:
    """Add ``simulate`` and ``stats`` to the ``borne`` command."""
    s = sub.add_parser(
        "simulate",
        help="simuler des journées de Wi-Fi et alimenter les statistiques / simulate days",
    )
    s.add_argument("--date", type=_day, default=dt.date.today().isoformat(), help="AAAA-MM-JJ")
    s.add_argument("--days", type=int, default=1, help="nombre de jours / number of days")
    s.add_argument("--scale", type=float, default=1.0, help="taille de la foule / crowd size")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--truth", default=None, help="dossier de la vérité terrain / truth folder")
    s.add_argument("--write-timeout", type=float, default=300.0)
    s.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    s.set_defaults(func=lambda a: asyncio.run(_simulate(a)))

    st = sub.add_parser("stats", help="statistiques anonymisées / anonymised statistics")
    st_sub = st.add_subparsers(dest="stats_command", required=True)
    e = st_sub.add_parser("export", help="CSV open data d'un jour / one day's open-data CSV")
    e.add_argument("--day", type=_day, required=True, help="AAAA-MM-JJ")
    e.add_argument("--flows", action="store_true", help="flux entre communes / flows")
    e.add_argument("--out", default=None, help="fichier (sinon la sortie) / file (else stdout)")
    e.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    e.set_defaults(func=lambda a: asyncio.run(_export(a)))
    o = st_sub.add_parser("optout", help="exclure un appareil / opt a device out")
    o.add_argument("mac")
    o.add_argument("-c", "--config", help="fichier TOML du contrôleur / controller TOML file")
    o.set_defaults(func=lambda a: asyncio.run(_optout(a)))
