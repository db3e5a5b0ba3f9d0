"""`python -m localdev twin|serve|demo`: the local Azure twin, the local Durable host, the demo."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "twin": ("localdev.twin.cli", "serve the Azure twin (prints its endpoints as one JSON line)"),
    "serve": ("localdev.host.cli", "serve a Durable Functions app locally, like `func start`"),
    "demo": ("localdev.demo", "onboard a simulated fleet end to end against the twin"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:6} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m localdev {twin,serve,demo} [options]\n" + "\n".join(lines), file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
