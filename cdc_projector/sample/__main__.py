"""``python -m cdc_projector.sample init|seed|workload`` (same as ``cdc-projector sample``)."""
from __future__ import annotations

import sys

from ..cli.cmd_sample import sample
from ..errors import CdcProjectorError


def main() -> None:
    try:
        sample.main(prog_name="python -m cdc_projector.sample")
    except CdcProjectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
