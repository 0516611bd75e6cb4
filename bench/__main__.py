"""``python -m bench`` (``make bench``): the whole comparison in one bounded run (~10 minutes).

Writes ``bench/out/report.json``, ``report.md`` and ``latency_by_size.png``; a full run (all
phases, not ``--quick``) also copies the Markdown and the plot to ``docs/`` for the README.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from contextlib import ExitStack, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import classes, memory, phases
from bench.corpus import corpus
from bench.images import ROTATION, all_photos, rotation_images
from bench.ours import ROOT, Client, ServerProcess
from bench.peer import PeerWorker, ensure_peer_env
from bench.report import targets, write
from bench.system import cpu_model, floor_ms, load_average, sgemm_peak

PHASES = ("cold", "e2e", "throughput", "inference", "draft", "memory", "classes")
DOCS = ROOT / "docs"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}"
    )
    parser.add_argument("--quick", action="store_true", help="few repetitions (development)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NSFWOID_X=VALUE",
        help="setting for our server and in-process service (repeatable)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="another configuration of our server, measured alongside in e2e and throughput",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="memory phase: another checkout (e.g. a git worktree of an older commit) whose "
        "decoder is measured alongside this one's",
    )
    parser.add_argument("--no-publish", action="store_true", help="never copy to docs/")
    args = parser.parse_args(argv)
    args.phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    return args


def quick(options: phases.Options) -> None:
    options.e2e_reps = 8
    options.e2e_budget_s = 15
    options.cold_trials = 1
    options.throughput_s = 3
    options.throughput_warmup_s = 1
    options.throughput_rounds = 1
    options.inference_reps = {1: 10, 8: 4}
    options.clients = (1, 4, 16)
    options.classes_reps = 4
    options.classes_budget_s = 4
    options.classes_photos = 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.env)
    env = {**{k: v for k, v in os.environ.items() if k.startswith("NSFWOID_")}, **overrides}
    # The in-process service logs nothing per request; keep its start-up line quiet.
    logging.basicConfig(level=logging.WARNING)

    from function.config import Settings
    from function.service import Service

    settings = Settings.from_env(env)
    options = phases.Options()
    if args.quick:
        quick(options)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "load_start": [round(x, 2) for x in load_average()],
        },
        "config": {
            "runtime": settings.runtime,
            "inference_threads": settings.inference_threads,
            "batch_max": settings.batch_max,
            "batch_wait_ms": settings.batch_wait_ms,
            "env": env,
            "quick": args.quick,
            "phases": args.phases,
            "options": {k: v for k, v in vars(options).items()},
        },
    }

    if "memory" in args.phases:
        report["memory"] = memory.memory(out, env, log, before=args.before)
        if set(args.phases) == {"memory"}:  # no model service, no peer: memory alone
            report["duration_s"] = time.perf_counter() - began
            report["machine"]["load_end"] = [round(x, 2) for x in load_average()]
            report["config"]["peer_version"] = "not run"
            log(f"report: {write(report, out)['markdown']}")
            return 0

    peer_python = ensure_peer_env(log)
    log("preparing images")
    images = rotation_images(out / "images")
    cold_image = images["1920x1080"][0]
    floor = float("nan")
    if "inference" in args.phases:
        # First, on a machine that is otherwise idle (as far as this run goes).
        sgemm = sgemm_peak(settings.inference_threads)
        report["machine"]["sgemm"] = sgemm
        floor = floor_ms(float(sgemm["gflops"]))
        log(f"sgemm peak {sgemm['gflops']:.0f} GFLOP/s on {settings.inference_threads} threads")

    if "cold" in args.phases:
        report["cold_start"] = phases.cold_start(
            options, env, peer_python, cold_image, settings.inference_threads, out, log
        )

    service = Service(settings)
    service.start(wait=True)
    if not service.ready:
        raise SystemExit(f"in-process service failed to load: {service.load_error}")
    try:
        with (
            ExitStack() as stack,
            ServerProcess(env, out / "server.log") as server,
            PeerWorker(peer_python, cold_image.path, settings.inference_threads) as peer,
        ):
            server.wait_ready()
            report["config"]["peer_version"] = peer.first["version"]
            client = Client(server.port)
            ctx = phases.Context(options, server, client, service, peer, log)
            for spec in args.variant:
                name, _, pairs = spec.partition(":")
                variant_env = {**env, **dict(p.split("=", 1) for p in pairs.split(",") if p)}
                other = stack.enter_context(ServerProcess(variant_env, out / f"server-{name}.log"))
                other.wait_ready()
                ctx.variants[name] = (other, stack.enter_context(closing(Client(other.port))))
                report["config"].setdefault("variants", {})[name] = variant_env
            try:
                if "e2e" in args.phases:
                    report["e2e"] = phases.e2e(ctx, images)
                if "throughput" in args.phases:
                    report["throughput"] = phases.throughput_curve(ctx, images["1920x1080"])
                if "inference" in args.phases:
                    report["inference"] = phases.inference(ctx, floor)
                if "classes" in args.phases:
                    log("preparing the upload classes (written once, then reused)")
                    by_class = corpus(out / "corpus", ROTATION[: options.classes_photos], log=log)
                    with ServerProcess(env, out / "server-echo.log", "bench.echo") as echo:
                        echo.wait_ready()
                        with closing(Client(echo.port)) as echo_client:
                            report["classes"] = classes.classes(
                                ctx,
                                by_class,
                                options.classes_reps,
                                options.classes_budget_s,
                                echo_client,
                            )
                    report["classes"]["throughput_16"] = classes.throughput_16(
                        ctx, by_class["camera-1080p"], phases
                    )
                report["memory_end"] = {"ours": server.memory(), "peer": peer.call("memory")}
            finally:
                client.close()
        if "draft" in args.phases:
            photos = all_photos() if not args.quick else all_photos()[:10]
            report["draft_deviation"] = phases.draft_deviation(
                service, photos, out / "images", "12MP", log
            )
    finally:
        service.stop()

    report["machine"]["load_end"] = [round(x, 2) for x in load_average()]
    report["duration_s"] = time.perf_counter() - began
    report.setdefault("config", {}).setdefault("peer_version", "0.1.0")
    paths = write(report, out)
    for target in targets(report):
        sign = ">=" if target.higher_is_better else "<="
        log(
            f"{target.name}: {target.value:.2f} (target {sign} {target.target}) {target.verdict}; "
            f"{target.detail}"
        )
    log(f"report: {paths['markdown']} ({report['duration_s']:.0f} s)")
    full = set(args.phases) == set(PHASES) and not args.quick
    if full and not args.no_publish:
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(paths["plot"], DOCS / "latency_by_size.png")
        shutil.copyfile(paths["markdown"], DOCS / "bench_report.md")
        log(f"published {DOCS / 'bench_report.md'} and {DOCS / 'latency_by_size.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
