"""Entry point of `mloop` and `kubectl-mloop`.

Exit codes: 0 success, 1 the command ran but found a problem, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys

from mloop import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mloop", description="mloop: ML build loops on Kubernetes.")
    parser.add_argument("--version", action="version", version=f"mloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="the local control plane and S3 server")
    dev_sub = dev.add_subparsers(dest="action", required=True)
    up = dev_sub.add_parser("up", help="start etcd, kube-apiserver, kube-controller-manager and S3; install the CRDs")
    up.add_argument("--operator", action="store_true", help="also run the operator in the background (local executor)")
    dev_sub.add_parser("down", help="stop everything `dev up` started")
    dev_sub.add_parser("env", help="print the export lines that point kubectl and mloop at the local stack")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        from mloop.cli import dev

        if args.action == "up":
            return dev.up(with_operator=args.operator)
        if args.action == "down":
            return dev.down()
        return dev.print_env()
    return 2


if __name__ == "__main__":
    sys.exit(main())
