"""``python -m openrtc_deploy.probe ready|alive|drain [--control PATH]``: a Kubernetes probe
and preStop hook that loads only the standard library.

- ``ready``: exit 0 when a generation is serving (every worker registered with LiveKit) and
  the controller is not draining; 1 otherwise (readiness probe).
- ``alive``: exit 0 when the controller answers (liveness probe).
- ``drain``: ask the controller to drain (each worker tells LiveKit at once it takes no new
  call; readiness turns false), print progress, and wait until every call ended or the drain
  timeout cut them; exit 0, or 1 when calls were cut (preStop hook).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .client import ControlError, control_path, request

USAGE = "usage: python -m openrtc_deploy.probe ready|alive|drain [--control PATH]"
PROBE_TIMEOUT_S = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    given: str | None = None
    if "--control" in args:
        at = args.index("--control")
        if at + 1 >= len(args):
            print(f"error: --control needs a path\n{USAGE}", file=sys.stderr)
            return 2
        given = args[at + 1]
        del args[at : at + 2]
    if len(args) != 1 or args[0] not in ("ready", "alive", "drain"):
        print(USAGE, file=sys.stderr)
        return 2
    op = args[0]
    path = control_path(given)
    timeout = None if op == "drain" else PROBE_TIMEOUT_S
    try:
        for answer in request(path, {"op": op}, timeout=timeout):
            if "progress" in answer:
                print(answer["progress"], flush=True)
            elif answer.get("done"):
                print(answer.get("message", ""), flush=True)
                return 0 if answer.get("ok") else 1
    except ControlError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
