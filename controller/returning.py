"""Returning devices let in as they appear, before any page: territorial continuity at
openNDS hotspots without even a redirect.

A device that accepted the legal texts in force is remembered for ``[portal]
continuity_hours`` (``radius._devices``). When an agent reports it ``seen`` (associated,
leased, not yet authorised) at a hotspot whose commune keeps continuity and shows the
texts it accepted, the controller sends that agent an ``authorize`` with the commune's
limits at once (purpose ``returning``). The device's OS then probes a network that is
already open: no login window opens. When this misses (the command is late, the agent
does not answer), the portal's own shortcut still lets the device in with one redirect
(``captive_portal._continuity``).

Rules:

- one ``authorize`` per appearance of a device at an access point: a later ``seen`` of
  the same device there (a full list, a replay) sends nothing until it has ``left``;
- never for a device unknown, forgotten (``borne radius forget-device``), whose period is
  over, or that accepted other texts than those in force; never where the commune turned
  continuity off;
- never while a ``deauthorize`` of that device at that access point is recent (a
  logout, or a session extension re-authorising it with its own limits);
- never from a late message of a previous run of the agent, nor from a replayed
  (back-filled) one: the device may be long gone.

Nothing waits in the ingest path: the decision and the command run in the background
(``Controller.spawn``). Logs name the device by its keyed tag only.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from agents.contract import ClientEvent, ClientsMsg
from controller.storage.schema import access_points, commands
from radius._devices import KnownDevices, continuity_on, holds

if TYPE_CHECKING:
    from controller.service import Controller

__all__ = ["Appearances", "ReturningDevices", "arrivals"]

logger = logging.getLogger(__name__)

# An appearance is forgotten when the device leaves, else after this long (a device
# that stays "seen" that long is not let in by this path again: the portal's is there).
APPEARANCE_S: Final = 6 * 3600.0
MAX_APPEARANCES: Final = 200_000
# A deauthorize this recent holds the device back (the portal's extension waits as long).
HOLD_AFTER_DEAUTH_S: Final = 600.0
# How long the background job waits for the agent's ack (for the counters and the log).
ACK_WAIT_S: Final = 10.0


def arrivals(msg: ClientsMsg) -> tuple[list[ClientEvent], list[str]]:
    """The ``seen`` devices of a batch not authorised in it, and the MACs that left.

    A device both ``seen`` and ``authorized`` in one batch was already let in (the
    agent reports a first sight of an authorised client that way).
    """
    authorized = {e.mac for e in msg.events if e.event == "authorized"}
    left = [e.mac for e in msg.events if e.event == "left"]
    seen: dict[str, ClientEvent] = {}
    for e in msg.events:
        if e.event == "seen" and e.mac not in authorized:
            seen[e.mac] = e
    return list(seen.values()), left


class Appearances:
    """Which devices were already handled at which access point (bounded, in memory).

    Pure: ``now`` is passed in. After a controller restart, a device still ``seen`` may
    be handled once more (harmless: the agent's gateway lets in a present device once).
    """

    def __init__(self, ttl_s: float = APPEARANCE_S, max_entries: int = MAX_APPEARANCES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._until: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def first(self, ap_id: str, mac: str, now: float) -> bool:
        """True the first time a device appears at ``ap_id`` (and remember it)."""
        key = (ap_id, mac)
        until = self._until.get(key)
        if until is not None and until > now:
            return False
        self._until.pop(key, None)
        self._until[key] = now + self.ttl_s
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)
        return True

    def gone(self, ap_id: str, macs: Iterable[str]) -> None:
        """These devices left ``ap_id``: their next appearance is a new one."""
        for mac in macs:
            self._until.pop((ap_id, mac), None)


class ReturningDevices:
    """The controller's hook on ``clients`` messages (see the module's rules)."""

    def __init__(self, ctl: Controller) -> None:
        self._c = ctl
        settings = ctl.settings
        self.devices = KnownDevices(
            ctl.db,
            settings.radius.device_key.get_secret_value(),
            settings.portal.terms_version,
        )
        self.appearances = Appearances()

    def after_message(self, msg: Any, *, late: bool, backfilled: bool) -> None:
        """Look at a stored ``clients`` message; start the checks of its new devices."""
        if not isinstance(msg, ClientsMsg) or self._c.settings.portal.continuity_hours <= 0:
            return
        seen, left = arrivals(msg)
        self.appearances.gone(msg.ap, left)
        if late or backfilled or not seen or self._c.bridge is None:
            return
        now = self._c.clock()
        fresh = [e for e in seen if self.appearances.first(msg.ap, e.mac, now)]
        if fresh:
            self._c.spawn(self._let_in(msg.ap, fresh), name=f"returning.{msg.ap}")

    async def _let_in(self, ap_id: str, events: list[ClientEvent]) -> None:
        ctl = self._c
        try:
            insee = await self._insee(ap_id)
            if insee is None or not continuity_on(ctl.settings.portal, insee):
                return
            terms = None
            for event in events:
                device = await self.devices.find(event.mac)
                now = ctl.clock()
                if device is None or device.expires_at <= now:
                    continue
                terms = terms or await self.devices.terms_in_force(insee)
                if not holds(device, terms, now):
                    ctl.counters["returning_other_terms"] += 1
                    continue
                if await self._held(ap_id, event.mac, now):
                    ctl.counters["returning_held"] += 1
                    continue
                await self._authorize(ap_id, insee, event.mac)
        except (sa.exc.SQLAlchemyError, OSError, KeyError) as exc:
            ctl.counters["returning_failed"] += 1
            logger.error("returning devices at %s not let in: %s", ap_id, exc)

    async def _authorize(self, ap_id: str, insee: str, mac: str) -> None:
        from controller.portal_backend import commune_authorize

        ctl = self._c
        args = commune_authorize(ctl.settings, insee, mac)
        cmd_id = await ctl.send_command(ap_id, args, purpose="returning")
        ctl.counters["returning_sent"] += 1
        ack = await ctl.wait_ack(cmd_id, ACK_WAIT_S)
        tag = _tag(mac)
        if ack is None:
            ctl.forget_ack(cmd_id)
            ctl.counters["returning_unanswered"] += 1
            logger.warning("returning device at %s (%s): no ack", ap_id, tag)
        elif not ack.ok:
            ctl.counters["returning_refused"] += 1
            logger.warning("returning device at %s (%s) refused: %s", ap_id, tag, ack.error)
        else:
            ctl.counters["returning_let_in"] += 1
            logger.info("returning device let in at %s (%s), no page", ap_id, tag)

    async def _insee(self, ap_id: str) -> str | None:
        async with self._c.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(access_points.c.insee).where(access_points.c.ap_id == ap_id)
                )
            ).first()
        return None if row is None else str(row.insee)

    async def _held(self, ap_id: str, mac: str, now: float) -> bool:
        """A recent deauthorize of this device here (logout, extension in progress)."""
        query = (
            sa.select(sa.func.count())
            .select_from(commands)
            .where(
                commands.c.ap_id == ap_id,
                commands.c.mac == mac,
                commands.c.cmd == "deauthorize",
                commands.c.created_at > now - HOLD_AFTER_DEAUTH_S,
            )
        )
        async with self._c.db.connect() as conn:
            return bool((await conn.execute(query)).scalar())


def _tag(mac: str) -> str:
    from controller.service import mac_tag

    return mac_tag(mac)
