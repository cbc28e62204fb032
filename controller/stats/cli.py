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


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"HÔTE:PORT attendu / expected HOST:PORT: {text!r}")
    return host, number


def _communes(count: int) -> list[Any]:
    """The ``count`` first communes, tourist sites first (0: all the Lot's)."""
    from controller.registry import lot_communes
    from controller.stats._sim import TOURIST_WEIGHTS

    everything = lot_communes()
    if count <= 0 or count >= len(everything):
        return everything
    rank = {name: i for i, name in enumerate(TOURIST_WEIGHTS)}
    return sorted(everything, key=lambda c: rank.get(c.name, len(rank)))[:count]


async def _write_truth(folder: str, sim: Any) -> None:
    out = Path(folder)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    text = json.dumps(sim.truth(), indent=1, ensure_ascii=False)
    await asyncio.to_thread((out / f"truth-{sim.day}.json").write_text, text)


async def _simulate_mqtt(args: argparse.Namespace) -> int:
    from controller.stats._sim import simulate_day
    from controller.stats._sim_mqtt import SimulationError, run_mqtt
    from controller.stats._stores import StoreError

    settings = _settings(args.config)
    await asyncio.to_thread(ZoneInfo, settings.stats.timezone)  # file IO, off the loop
    host, port = args.mqtt
    places = await asyncio.to_thread(_communes, 10 if args.communes is None else args.communes)
    first = dt.date.fromisoformat(args.date)
    scale = 0.01 if args.scale is None else args.scale
    sims = [
        await asyncio.to_thread(
            simulate_day,
            (first + dt.timedelta(days=i)).isoformat(),
            scale=scale,
            seed=args.seed,
            communes=places,
        )
        for i in range(args.days)
    ]
    print(
        f"{sum(len(s.sessions) for s in sims)} sessions, {len(places)} communes, "
        f"courtier / broker {host}:{port}",
        flush=True,
    )
    try:
        run = await run_mqtt(settings, sims, host, port, step_s=args.step, progress=True)
    except (SimulationError, StoreError, ValueError) as exc:
        print(f"borne simulate : {exc}", file=sys.stderr)
        return 1
    for sim in sims:
        if args.truth:
            await _write_truth(args.truth, sim)
        row = run.stats_days.get(sim.day, {})
        print(
            f"{sim.day} : {row.get('sessions')} sessions, {row.get('devices')} appareils, "
            f"{row.get('published')} cellules publiées sur {row.get('cells')} / "
            f"{row.get('sessions')} sessions, {row.get('devices')} devices, "
            f"{row.get('published')} of {row.get('cells')} cells published"
        )
    print(
        f"{run.authorised} sessions autorisées par les agents, {run.failed} échecs, "
        f"{run.steps} pas, {run.messages} messages, {run.wall_s:.0f} s / "
        f"{run.authorised} sessions authorised by the agents, {run.failed} failed, "
        f"{run.steps} steps, {run.messages} messages, {run.wall_s:.0f} s"
    )
    return 0 if run.failed == 0 else 1


async def _simulate(args: argparse.Namespace) -> int:
    if args.mqtt is not None:
        return await _simulate_mqtt(args)
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
    places = await asyncio.to_thread(_communes, args.communes or 0)
    scale = 1.0 if args.scale is None else args.scale
    try:
        if isinstance(store, Influx1Store):
            await store.create_database()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(writer.run(), name="simulate.writer")
            for i in range(args.days):
                day = (first + dt.timedelta(days=i)).isoformat()
                sim = await asyncio.to_thread(
                    simulate_day, day, scale=scale, seed=args.seed, communes=places
                )
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
                    await _write_truth(args.truth, sim)
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
    s.add_argument(
        "--scale",
        type=float,
        default=None,
        help="taille de la foule (1 ; 0,01 avec --mqtt) / crowd size (1; 0.01 with --mqtt)",
    )
    s.add_argument(
        "--communes",
        type=int,
        default=None,
        help="nombre de communes, sites touristiques d'abord (toutes ; 10 avec --mqtt) / "
        "number of communes, tourist sites first (all; 10 with --mqtt)",
    )
    s.add_argument(
        "--mqtt",
        type=_hostport,
        default=None,
        metavar="HÔTE:PORT",
        help="jouer les journées avec de vrais agents sur ce courtier MQTT / play the days "
        "through real agents on this MQTT broker",
    )
    s.add_argument(
        "--step",
        type=int,
        default=60,
        help="pas de l'horloge simulée en secondes, avec --mqtt / simulated clock step (s)",
    )
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
