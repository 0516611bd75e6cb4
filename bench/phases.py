"""The measurements. Each phase alternates ours and the peer call by call (never all of one
side, then all of the other), so a burst of load from elsewhere on the machine lands on both.

Every loop is bounded twice: a count and a time budget, whichever ends first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.classes import full_decode_scores
from bench.images import BenchImage, make_image
from bench.ours import Client, ServerProcess, cpu_seconds
from bench.peer import PeerWorker
from bench.peer_worker import throughput
from bench.stats import summarize
from function.pipeline import Source
from function.service import Service

Log = Callable[[str], None]


@dataclass
class Options:
    e2e_reps: int = 25
    e2e_budget_s: float = 45.0
    e2e_warmup: int = 2
    cold_trials: int = 3
    clients: tuple[int, ...] = (1, 2, 4, 8, 16)
    throughput_warmup_s: float = 1.0
    throughput_s: float = 4.0
    throughput_rounds: int = 3
    throughput_max_requests: int = 5000
    inference_reps: dict[int, int] = field(default_factory=lambda: {1: 30, 8: 10})
    inference_budget_s: float = 30.0
    classes_reps: int = 12
    classes_budget_s: float = 20.0
    """Per class of ``bench/corpus.py``, whichever ends first."""
    classes_photos: int = 4
    settle_s: float = 0.03
    """Pause after a call that ran no model (the floor's decode) before the next measured call."""
    settle_after_inference_s: float = 0.15
    """Pause after any call that ran the model, ours or the peer's. onnxruntime's intra-op
    threads spin after a run (the peer's always, ours when a request was alone): one thread
    burns ~20-30 ms of CPU over the 30-100 ms after each call. Measuring the next side inside
    that window would hand one of the two cores to the previous side's spinning thread."""


@dataclass
class Context:
    options: Options
    server: ServerProcess
    client: Client
    service: Service
    peer: PeerWorker
    log: Log
    variants: dict[str, tuple[ServerProcess, Client]] = field(default_factory=dict)
    """Other configurations of our server, measured alongside (``--variant``)."""


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1000


def cold_start(
    options: Options,
    env: dict[str, str],
    peer_python: Path,
    image: BenchImage,
    threads: int,
    out: Path,
    log: Log,
) -> dict[str, Any]:
    """Fresh processes, alternately ours first and the peer first: start → ready → first score.

    Our worker's memory is read right after its first score, like the peer's.
    """
    ours_ready: list[float] = []
    ours_first: list[float] = []
    ours_memory: list[dict[str, int]] = []
    peer_first: list[float] = []
    peer_memory: list[dict[str, int]] = []
    peer_parts: list[dict[str, float]] = []

    def run_ours() -> None:
        with ServerProcess(env, out / "server-cold.log") as server:
            ours_ready.append(server.wait_ready())
            client = Client(server.port)
            try:
                client.score(image.data)
            finally:
                client.close()
            ours_first.append(time.perf_counter() - server.started)
            ours_memory.append(server.memory())

    def run_peer() -> None:
        with PeerWorker(peer_python, image.path, threads) as worker:
            peer_first.append(worker.cold_start_s)
            peer_memory.append({k: int(worker.first[k]) for k in ("vmrss_kb", "vmhwm_kb")})
            peer_parts.append(
                {k: float(worker.first[k]) for k in ("import_s", "init_s", "classify_s")}
            )

    for trial in range(options.cold_trials):
        for run in (run_ours, run_peer) if trial % 2 == 0 else (run_peer, run_ours):
            run()
            time.sleep(0.5)  # let page cache writeback and exiting processes settle
        log(
            f"cold start {trial + 1}/{options.cold_trials}: ours ready {ours_ready[-1]:.2f}s "
            f"first score {ours_first[-1]:.2f}s; peer first score {peer_first[-1]:.2f}s"
        )
    return {
        "ours_ready_s": summarize(ours_ready),
        "ours_first_score_s": summarize(ours_first),
        "peer_first_score_s": summarize(peer_first),
        "peer_breakdown_s": {
            key: summarize([p[key] for p in peer_parts])
            for key in ("import_s", "init_s", "classify_s")
        },
        "ours_memory_kb": {
            key: summarize([float(m[key]) for m in ours_memory]) for key in ours_memory[0]
        },
        "peer_memory_kb": {
            key: summarize([float(m[key]) for m in peer_memory]) for key in peer_memory[0]
        },
        "image": image.key,
    }


def e2e(ctx: Context, images: dict[str, list[BenchImage]]) -> dict[str, Any]:
    """Per image: ours over HTTP, ours in process (Pipeline.score), the peer in process."""
    results: dict[str, Any] = {}
    for size, batch in images.items():
        results[size] = _e2e_size(ctx, size, batch)
    return results


def _e2e_size(ctx: Context, size: str, batch: list[BenchImage]) -> dict[str, Any]:
    opts = ctx.options
    samples: dict[str, list[float]] = {"ours_http": [], "ours_inproc": [], "peer": []}
    deltas: list[float] = []
    stages: dict[str, list[float]] = {}
    ctx.peer.call("load", images={img.key: str(img.path) for img in batch})

    def http(img: BenchImage) -> tuple[float, float]:
        began = time.perf_counter()
        result = ctx.client.score(img.data)
        return (time.perf_counter() - began) * 1000, float(result["score"])

    def inproc(img: BenchImage) -> tuple[float, float]:
        began = time.perf_counter()
        result = ctx.service.pipeline.score(Source(data=img.data))
        elapsed = (time.perf_counter() - began) * 1000
        for stage, ms in result["timing_ms"].items():
            stages.setdefault(stage, []).append(float(ms))
        return elapsed, float(result["score"])

    def peer(img: BenchImage) -> tuple[float, float]:
        reply = ctx.peer.call("classify", image=img.key)
        return float(reply["ms"]), float(reply["nsfw"])

    def variant(client: Client) -> Callable[[BenchImage], tuple[float, float]]:
        def side(img: BenchImage) -> tuple[float, float]:
            began = time.perf_counter()
            result = client.score(img.data)
            return (time.perf_counter() - began) * 1000, float(result["score"])

        return side

    sides: list[tuple[str, Callable[[BenchImage], tuple[float, float]]]] = [
        ("ours_http", http),
        ("ours_inproc", inproc),
        ("peer", peer),
    ] + [(f"variant:{name}", variant(client)) for name, (_, client) in ctx.variants.items()]
    for name, _ in sides:
        samples.setdefault(name, [])
    deadline = time.perf_counter() + opts.e2e_budget_s
    for i in range(opts.e2e_warmup + opts.e2e_reps):
        if time.perf_counter() > deadline:
            break
        img = batch[i % len(batch)]
        shift = i % len(sides)  # rotate who goes first
        scores: dict[str, float] = {}
        for name, side in sides[shift:] + sides[:shift]:
            ms, score = side(img)
            scores[name] = score
            if i >= opts.e2e_warmup:
                samples[name].append(ms)
            time.sleep(opts.settle_after_inference_s)  # every side ran the model
        deltas.append(abs(scores["ours_http"] - scores["peer"]))
    result: dict[str, Any] = {
        **{name: summarize(values) for name, values in samples.items()},
        "stages_ms": {stage: summarize(v) for stage, v in stages.items()},
        "max_abs_score_delta_vs_peer": max(deltas) if deltas else float("nan"),
        "bytes": [len(img.data) for img in batch],
    }
    med = {name: result[name]["median"] for name in samples}
    ctx.log(
        f"e2e {size}: ours http {med['ours_http']:.1f} ms, in-process "
        f"{med['ours_inproc']:.1f} ms, peer {med['peer']:.1f} ms "
        f"(n={result['peer']['n']})"
        + "".join(f", {name} {ms:.1f} ms" for name, ms in med.items() if ":" in name)
    )
    return result


def throughput_curve(ctx: Context, images: list[BenchImage]) -> dict[str, Any]:
    """N concurrent clients against our server vs N threads sharing the peer's classifier."""
    opts = ctx.options
    ctx.peer.call("load", images={img.key: str(img.path) for img in images})
    data = [img.data for img in images]
    clients_made: list[Client] = []

    def caller(server: ServerProcess) -> Callable[[], Callable[[bytes], object]]:
        def make() -> Callable[[bytes], object]:
            client = Client(server.port)
            clients_made.append(client)
            return client.score

        return make

    def run_server(server: ServerProcess, n: int) -> dict[str, Any]:
        worker = server.worker_pid()
        server_before, client_before = cpu_seconds(worker), os.times()
        try:
            result = throughput(
                caller(server),
                data,
                n,
                opts.throughput_warmup_s,
                opts.throughput_s,
                opts.throughput_max_requests,
            )
            client_after = os.times()
            result["cpu_s"] = cpu_seconds(worker) - server_before
            result["client_cpu_s"] = (client_after.user + client_after.system) - (
                client_before.user + client_before.system
            )
            return result
        finally:
            for client in clients_made:
                client.close()
            clients_made.clear()

    def run_peer(n: int) -> dict[str, Any]:
        return ctx.peer.call(
            "throughput",
            images=[img.key for img in images],
            clients=n,
            warmup=opts.throughput_warmup_s,
            seconds=opts.throughput_s,
            max_requests=opts.throughput_max_requests,
        )

    servers = {"ours": ctx.server, **{f"variant:{k}": s for k, (s, _) in ctx.variants.items()}}
    names = [*servers, "peer"]
    results: dict[str, Any] = {}
    for i, n in enumerate(opts.clients):
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        # Several short windows per side, alternating, rather than one long one each: load
        # from elsewhere on a shared machine then lands on both sides alike.
        for r in range(opts.throughput_rounds):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                server = servers.get(name)
                before = batch_histogram(server) if server else {}
                raw = run_server(server, n) if server else run_peer(n)
                if server:
                    raw["batch_sizes"] = diff_histogram(batch_histogram(server), before)
                rounds[name].append(raw)
                time.sleep(0.3)
        runs = {name: pooled(windows) for name, windows in rounds.items()}
        results[str(n)] = runs
        ours, peer = runs["ours"], runs["peer"]
        ctx.log(
            f"throughput {n} client(s): ours {ours['per_s']:.1f}/s "
            f"(p50 {ours['latency_ms']['median']:.0f} ms, server CPU "
            f"{ours['cpu_ms_per_image']:.1f} ms/img, client CPU "
            f"{ours['client_cpu_s'] * 1000 / max(ours['total_completed'], 1):.1f} ms/img), peer "
            f"{peer['per_s']:.1f}/s (p50 {peer['latency_ms']['median']:.0f} ms, CPU "
            f"{peer['cpu_ms_per_image']:.1f} ms/img)"
            + "".join(
                f"; {name} {run['per_s']:.1f}/s (p50 {run['latency_ms']['median']:.0f} ms, "
                f"CPU {run['cpu_ms_per_image']:.1f} ms/img)"
                for name, run in runs.items()
                if ":" in name
            )
        )
    return results


def pooled(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's windows at one concurrency, summed: rate over all windows, every latency."""
    completed = sum(int(w["completed"]) for w in windows)
    window_s = sum(float(w["window_s"]) for w in windows)
    total = sum(int(w["total_completed"]) for w in windows)
    cpu_s = sum(float(w["cpu_s"]) for w in windows)
    result: dict[str, Any] = {
        "clients": windows[0]["clients"],
        "windows": len(windows),
        "completed": completed,
        "window_s": window_s,
        "per_s": completed / window_s if window_s else float("nan"),
        "per_s_by_window": [float(w["per_s"]) for w in windows],
        "latency_ms": summarize([ms for w in windows for ms in w["latencies_ms"]]),
        "total_completed": total,
        "cpu_s": cpu_s,
        # CPU per image is what the throughput of an otherwise idle machine follows from
        # (cores / CPU per image), and is much steadier than wall time on a shared box.
        "cpu_ms_per_image": cpu_s * 1000 / max(total, 1),
        "failures": [f for w in windows for f in w["failures"]][:5],
    }
    if "client_cpu_s" in windows[0]:
        result["client_cpu_s"] = sum(float(w["client_cpu_s"]) for w in windows)
    if "batch_sizes" in windows[0]:
        keys = windows[0]["batch_sizes"]
        result["batch_sizes"] = {
            k: sum(w["batch_sizes"].get(k, 0.0) for w in windows) for k in keys
        }
    return result


def batch_histogram(server: ServerProcess) -> dict[str, float]:
    """The server's batch-size histogram buckets (cumulative counts), from /metrics."""
    client = Client(server.port)
    try:
        status, body = client.request("GET", "/metrics")
    finally:
        client.close()
    found: dict[str, float] = {}
    if status != 200:
        return found
    for line in body.decode().splitlines():
        if line.startswith("nsfwoid_batch_size_bucket") or line.startswith(
            "nsfwoid_batch_size_count"
        ):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def diff_histogram(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def inference(ctx: Context, floor_ms: float) -> dict[str, Any]:
    """Model only, on a ready tensor: our Model.predict (configured runtime) vs the peer's."""
    opts = ctx.options
    rng = np.random.default_rng(0)
    model = ctx.service.model
    results: dict[str, Any] = {}
    for batch_size, reps in opts.inference_reps.items():
        tensor = rng.normal(0, 60, (batch_size, 224, 224, 3)).astype(np.float32)
        samples: dict[str, list[float]] = {"ours": [], "peer": []}
        deadline = time.perf_counter() + opts.inference_budget_s
        for i in range(2 + reps):
            if time.perf_counter() > deadline:
                break
            for side in ("ours", "peer") if i % 2 == 0 else ("peer", "ours"):
                if side == "ours":
                    # Nothing else runs in this process: the model is scored as a lone request.
                    ms = timed(partial(model.predict, tensor, alone=True))
                else:
                    ms = float(ctx.peer.call("infer", batch=batch_size)["ms"])
                if i >= 2:  # the first two are warm-up (and the batch-size change)
                    samples[side].append(ms / batch_size)
                time.sleep(opts.settle_after_inference_s)
        ours, peer = samples["ours"], samples["peer"]
        row: dict[str, Any] = {
            "ours_ms_per_image": summarize(ours),
            "peer_ms_per_image": summarize(peer),
        }
        row["floor_ms_per_image"] = floor_ms
        row["ours_of_floor"] = floor_ms / row["ours_ms_per_image"]["median"]
        row["peer_of_floor"] = floor_ms / row["peer_ms_per_image"]["median"]
        results[str(batch_size)] = row
        ctx.log(
            f"inference batch {batch_size}: ours {row['ours_ms_per_image']['median']:.2f} "
            f"ms/img ({row['ours_of_floor']:.2f} of floor), peer "
            f"{row['peer_ms_per_image']['median']:.2f} ms/img ({row['peer_of_floor']:.2f}); "
            f"floor {floor_ms:.2f}"
        )
    results["reshape"] = reshape_cost(ctx)
    return results


def reshape_cost(ctx: Context, rounds: int = 4) -> dict[str, Any]:
    """What a change of batch size costs our runtime: the first batch-1 call after a batch-8
    call (the interpreter reallocates) against batch-1 calls in a row."""
    rng = np.random.default_rng(1)
    one = rng.normal(0, 60, (1, 224, 224, 3)).astype(np.float32)
    eight = rng.normal(0, 60, (8, 224, 224, 3)).astype(np.float32)
    model = ctx.service.model
    after_change: list[float] = []
    steady: list[float] = []
    for _ in range(rounds):
        model.predict(eight, alone=True)
        after_change.append(timed(partial(model.predict, one, alone=True)))
        steady.append(timed(partial(model.predict, one, alone=True)))
    return {
        "batch1_after_batch8_ms": summarize(after_change),
        "batch1_steady_ms": summarize(steady),
    }


def draft_deviation(
    service: Service, photos: list[str], directory: Path, size: str, log: Log
) -> dict[str, Any]:
    """|standard − reference| score per photo at ``size``: what JPEG draft decoding (and the
    other viewer-faithful steps) costs in score, next to the decode time it saves."""
    per_photo: dict[str, dict[str, float]] = {}
    for photo in photos:
        img = make_image(photo, size, directory)
        standard = service.pipeline.score(Source(data=img.data), mode="standard")
        reference = service.pipeline.score(Source(data=img.data), mode="reference")
        (full,) = full_decode_scores(service, [img])
        per_photo[photo] = {
            "standard": float(standard["score"]),
            "reference": float(reference["score"]),
            "full_decode": full,
            "abs_delta": abs(float(standard["score"]) - float(reference["score"])),
            "abs_delta_full_decode": abs(float(standard["score"]) - full),
            "decode_ms_standard": float(standard["timing_ms"]["decode"]),
            "decode_ms_reference": float(reference["timing_ms"]["decode"]),
            "preprocess_ms_standard": float(standard["timing_ms"]["preprocess"]),
            "preprocess_ms_reference": float(reference["timing_ms"]["preprocess"]),
        }
    deltas = [p["abs_delta"] for p in per_photo.values()]
    shifts = [p["abs_delta_full_decode"] for p in per_photo.values()]
    result = {
        "size": size,
        "photos": len(per_photo),
        "max_abs_delta": max(deltas),
        "median_abs_delta": summarize(deltas)["median"],
        "max_abs_delta_full_decode": max(shifts),
        "median_abs_delta_full_decode": summarize(shifts)["median"],
        "per_photo": per_photo,
    }
    log(
        f"draft vs reference at {size} over {len(per_photo)} photos: max |Δscore| "
        f"{result['max_abs_delta']:.4f}, median {result['median_abs_delta']:.4f}; draft vs full "
        f"decode (same pipeline) max {result['max_abs_delta_full_decode']:.4f}, median "
        f"{result['median_abs_delta_full_decode']:.4f}"
    )
    return result
