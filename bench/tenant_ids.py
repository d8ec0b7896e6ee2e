"""The cost of ``--ingest-multi``'s tagging step, run by hand (not in CI).

`tenants.with_tenant_ids` adds ``"tenantId"`` to every item of a codec body in Python, after
the codec (the codec does not write it yet). This measures it against the encoding of the
same datapoints by the codec in use: CPU time, median of --reps runs.

    .venv/bin/python bench/tenant_ids.py [--datapoints N] [--reps R]
"""

from __future__ import annotations

import argparse
import statistics
import time

from fastforward import codec
from fastforward.tenants import with_tenant_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datapoints", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    now = int(time.time())
    lines = b"".join(
        b"servers.host%03d.cpu.user%d %d.5 %d\n" % (i % 500, i, i, now)
        for i in range(args.datapoints)
    )
    encode_s, tag_s = [], []
    for _ in range(args.reps):
        encoder = codec.Encoder()
        started = time.process_time()
        encoder.add_lines(lines)
        bodies = encoder.take_counted(partial=True)
        encode_s.append(time.process_time() - started)
        started = time.process_time()
        for body, _ in bodies:
            with_tenant_ids(body, "222")
        tag_s.append(time.process_time() - started)
    encode, tag = statistics.median(encode_s), statistics.median(tag_s)
    size = sum(len(body) for body, _ in bodies)
    print(f"codec {codec.IMPLEMENTATION}: {args.datapoints} datapoints, {size / 1e6:.1f} MB")
    print(f"encode: {encode * 1000:.1f} ms CPU ({args.datapoints / encode / 1e6:.1f} M/s)")
    print(f"tag:    {tag * 1000:.1f} ms CPU ({args.datapoints / tag / 1e6:.1f} M/s)")
    print(f"tagging adds {tag / encode * 100:.0f}% to the encoding")


if __name__ == "__main__":
    main()
