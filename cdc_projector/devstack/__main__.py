"""``python -m cdc_projector.devstack up|down|status [SERVICE...]``.

Services: postgres kafka connect ferretdb (default: all). ``up`` installs what
is missing (apt, Maven Central, go install), starts what is not running and
waits until each service answers; a second ``up`` only checks. ``down`` stops
them (dropping every replication slot of the Postgres cluster first).
``status`` prints one line per service and exits 1 if any asked-for service is
down. Settings (ports, stack directory) come from the environment, see
:mod:`cdc_projector.devstack.settings`.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import CdcProjectorError
from . import stack
from .settings import SERVICES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_projector.devstack",
                                     description="Run the local service stack without Docker.")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("services", nargs="*", metavar="SERVICE",
                        help=f"any of: {' '.join(SERVICES)} (default: all)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            reports = stack.up(args.services, echo=not args.json)
            if args.json:
                print(json.dumps([{"service": r.name, "actions": r.actions} for r in reports]))
            return 0
        if args.command == "down":
            stopped = stack.down(args.services, echo=not args.json)
            if args.json:
                print(json.dumps({"stopped": stopped}))
            return 0
        states = stack.status(args.services)
        if args.json:
            print(json.dumps([vars(st) for st in states]))
        else:
            for st in states:
                print(st.line())
        return 0 if all(st.running for st in states) else 1
    except CdcProjectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
