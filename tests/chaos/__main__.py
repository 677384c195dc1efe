"""``python -m tests.chaos [--seconds N] [--seed S]``: run one campaign; exit 1 on any violation."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tests.chaos.campaign import CampaignConfig, run_campaign


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS") or 600),
                   help="how long faults are injected [CHAOS_SECONDS, default 600]")  # fmt: skip
    seed = os.environ.get("CHAOS_SEED")
    p.add_argument("--seed", type=int, default=int(seed) if seed else None,
                   help="seed of the fault schedule; printed at start [CHAOS_SEED, default random]")  # fmt: skip
    p.add_argument("--rate", type=float, default=40.0, help="writer transactions per second")
    p.add_argument("--fault", action="append", dest="faults", help="only this fault (repeatable); see campaign.py")
    p.add_argument("--no-crash-points", action="store_true", help="do not arm the named crash/fault points")
    p.add_argument("--no-clock-jumps", action="store_true",
                   help="do not step the relays' and consumers' wall clocks (tests/chaos/clock.py)")  # fmt: skip
    p.add_argument("--kafka-cluster", action="store_true",
                   help="a 3-node Apache Kafka cluster (RF 3, min ISR 2) instead of the store; leader kills")  # fmt: skip
    p.add_argument("--work-dir", type=Path, help="keep logs and data here (default: a temp dir)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    cfg = CampaignConfig(
        seconds=args.seconds, seed=args.seed, rate=args.rate, faults=args.faults,
        crash_points=not args.no_crash_points, work_dir=args.work_dir, clock_jumps=not args.no_clock_jumps,
        kafka_cluster=args.kafka_cluster,
    )  # fmt: skip
    _, result = run_campaign(cfg)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
