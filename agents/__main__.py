"""``python3 -m agents -c /etc/borne/agent.toml``: the agent's entry point on an AP.

Needs only the standard library and paho-mqtt (``borne agent`` calls the same code).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from agents.agent import Agent
from agents.config import AgentConfigError, load_agent_config
from agents.gateway import Gateway, NdsctlGateway, SimulatedGateway, config_targets


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(prog="borne-agent")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--check", action="store_true", help="diagnose and exit (0: all good)")
    args = p.parse_args(argv)
    if args.check:
        from agents._check import format_findings, run_checks

        found = run_checks(Path(args.config))
        print(format_findings(found))
        return 0 if all(f.ok for f in found) else 1
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_agent_config(Path(args.config))
    except AgentConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}", file=sys.stderr)
        return 2
    gateway: Gateway
    if config.gateway == "simulated":
        sim = SimulatedGateway(traffic_per_read=1500 if config.simulated_clients else 0)
        sim.populate(config.simulated_clients, time.time())
        gateway = sim
    else:
        gateway = NdsctlGateway(config.ndsctl, targets=config_targets(config))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Agent(config, gateway, config_path=Path(args.config)).run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
