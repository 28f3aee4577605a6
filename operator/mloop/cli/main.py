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
    sub.add_parser("serve", help="serve one model package over HTTP (see `mloop serve --help`)", add_help=False)

    dev = sub.add_parser("dev", help="the local control plane and S3 server")
    dev_sub = dev.add_subparsers(dest="action", required=True)
    up = dev_sub.add_parser("up", help="start etcd, kube-apiserver, kube-controller-manager and S3; install the CRDs")
    up.add_argument("--operator", action="store_true", help="also run the operator in the background (local executor)")
    up.add_argument("--node", action="store_true",
                    help="also run a real node: containerd, kubelet, kube-proxy, scheduler, bridge CNI (root)")
    dev_sub.add_parser("down", help="stop everything `dev up` started")
    dev_sub.add_parser("env", help="print the export lines that point kubectl and mloop at the local stack")

    runs = sub.add_parser("runs", help="TrainingRuns")
    runs_sub = runs.add_subparsers(dest="action", required=True)
    compare = runs_sub.add_parser("compare", help="parameters and metrics of matching runs, best first")
    compare.add_argument("-l", "--selector", help="label selector, e.g. mloop.dev/experiment=iris")
    compare.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    compare.add_argument("-A", "--all-namespaces", action="store_true", help="look in every namespace")
    compare.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    compare.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")

    lin = sub.add_parser("lineage", help="what an object came from and what came of it")
    lin.add_argument("target", help="<kind>/<name>, e.g. trainingrun/iris-rf, dataset/iris, mp/iris-1")
    lin.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    lin.add_argument("-o", "--output", choices=["text", "dot", "svg", "png"], default="text")
    lin.add_argument("--file", help="write to this file instead of standard output")

    st = sub.add_parser("status", help="every mloop object with its phase and key fields")
    st.add_argument("-n", "--namespace", default="default")
    st.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    lg = sub.add_parser("logs", help="a TrainingRun's task log, from S3 or from the running task")
    lg.add_argument("run", help="TrainingRun name")
    lg.add_argument("-n", "--namespace", default="default")

    demo = sub.add_parser("demo", help="the whole loop on the local stack: iris in, a retrained model out")
    demo.add_argument("-n", "--namespace", default="mloop-demo")
    demo.add_argument("-o", "--output", choices=["table", "json"], default="table")
    demo.add_argument("--lineage-file", default="mloop-lineage.svg", help="where the lineage graph is written")
    demo.add_argument("--timeout", type=float, default=900)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # the server has its own flags
        from mloop.serving.server import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        from mloop.cli import dev

        if args.action == "up":
            return dev.up(with_operator=args.operator, node=args.node)
        if args.action == "down":
            return dev.down()
        return dev.print_env()
    if args.command == "runs":
        from mloop.cli.runs import compare

        return compare(args.selector, None if args.all_namespaces else args.namespace, args.output, args.csv)
    if args.command == "status":
        from mloop.cli.status import status

        return status(args.namespace, args.output)
    if args.command == "logs":
        from mloop.cli.logs import logs

        return logs(args.run, args.namespace)
    if args.command == "demo":
        from mloop.cli.demo import demo

        return demo(args.namespace, args.output, args.lineage_file, args.timeout)
    if args.command == "lineage":
        from mloop.cli.lineage import lineage

        return lineage(args.target, args.namespace, args.output, args.file)
    return 2


if __name__ == "__main__":
    sys.exit(main())
