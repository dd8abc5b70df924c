"""Zero-downtime rebuild and verification of projections (docs/rebuild.md).

* :mod:`.build` - :class:`~.build.Rebuilder`: shadow build, catch-up, swap;
* :mod:`.shadow` - shadow naming and the per-sink swap;
* :mod:`.live` - stopping/resuming the live pipeline around the swap;
* :mod:`.verify` - live view vs the view computed from a source snapshot;
* :mod:`.canonical` - canonical form, checksum, comparison;
* :mod:`.progress` - progress bar / lines;
* :mod:`.session` - opening sinks and live control from the CLI or inside ``run``.
"""
