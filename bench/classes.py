"""The ``classes`` phase: every upload class of ``bench/corpus.py`` against the peer and the floor.

Per class, call by call and rotating who goes first: ours over HTTP, ours in process (with its
per-stage timings), the peer in process, and the **floor** for that file: the decode alone at
the scale we decode it (Pillow, JPEG draft to the same size, no guards, no colour work) plus
one batch-1 inference on a ready tensor, measured in the same loop. Each figure then reads as
ours / peer and ours / floor. The same file posted to ``bench/echo.py`` (functions-framework
on gunicorn as we run it, reading the body and nothing else) gives the **HTTP floor**: floor +
HTTP floor is the least a server built as ours could answer in.

Fidelity: every image is also scored in standard mode with the draft switched off (a full
decode, the same pipeline otherwise); the worst and median |Δscore| per class are reported.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from bench.corpus import BY_NAME
from bench.images import BenchImage
from bench.ours import Client, ServerError
from bench.stats import ratio, summarize
from function import walk as decode_module
from function.pipeline import Source


def floor_decode(data: bytes) -> Image.Image:
    """The least work that gives the pixels we preprocess: open, draft, load."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG" and decode_module.DRAFT_SIDE:
        image.draft(image.mode, (decode_module.DRAFT_SIDE, decode_module.DRAFT_SIDE))
    image.load()
    return image


def full_decode_scores(service: Any, images: list[BenchImage]) -> list[float]:
    """Standard-mode scores with the JPEG draft off (single-threaded: nothing else scores in
    this process meanwhile)."""
    saved = decode_module.DRAFT_SIDE
    decode_module.DRAFT_SIDE = None
    try:
        return [float(service.pipeline.score(Source(data=img.data))["score"]) for img in images]
    finally:
        decode_module.DRAFT_SIDE = saved


def classes(
    ctx: Any, corpus: dict[str, list[BenchImage]], reps: int, budget_s: float, echo: Client
) -> Any:
    """Per class: latency of every side, the floors, stage timings and the draft's fidelity."""
    results: dict[str, Any] = {}
    for name, images in corpus.items():
        results[name] = _one_class(ctx, name, images, reps, budget_s, echo)
    return results


def _one_class(
    ctx: Any, name: str, images: list[BenchImage], reps: int, budget_s: float, echo: Client
) -> dict[str, Any]:
    opts = ctx.options
    image_class = BY_NAME[name]
    content_type = image_class.content_type
    ctx.peer.call("load", images={img.key: str(img.path) for img in images})
    model = ctx.service.model
    samples: dict[str, list[float]] = {
        "ours_http": [],
        "ours_inproc": [],
        "peer": [],
        "floor_decode": [],
        "floor_infer": [],
        "floor_http": [],
    }
    stages: dict[str, list[float]] = {}
    standard: dict[str, float] = {}
    peer_failures: list[str] = []
    tensor = np.random.default_rng(0).normal(0, 60, (1, 224, 224, 3)).astype(np.float32)

    def http(img: BenchImage) -> float:
        began = time.perf_counter()
        ctx.client.score(img.data, content_type)
        return (time.perf_counter() - began) * 1000

    def inproc(img: BenchImage) -> float:
        began = time.perf_counter()
        result = ctx.service.pipeline.score(Source(data=img.data))
        elapsed = (time.perf_counter() - began) * 1000
        standard[img.key] = float(result["score"])
        for stage, ms in result["timing_ms"].items():
            stages.setdefault(stage, []).append(float(ms))
        return elapsed

    def peer(img: BenchImage) -> float:
        reply = ctx.peer.call("classify", image=img.key)
        if "failed" in reply:
            peer_failures.append(str(reply["failed"]))
        return float(reply["ms"])

    def decode_floor(img: BenchImage) -> float:
        began = time.perf_counter()
        floor_decode(img.data).close()
        return (time.perf_counter() - began) * 1000

    def http_floor(img: BenchImage) -> float:
        began = time.perf_counter()
        status, _ = echo.request("POST", "/", img.data, content_type)
        elapsed = (time.perf_counter() - began) * 1000
        if status != 200:
            raise ServerError(f"the echo server answered {status}")
        return elapsed

    def infer_floor(img: BenchImage) -> float:
        began = time.perf_counter()
        model.predict(tensor, alone=True)
        return (time.perf_counter() - began) * 1000

    sides: list[tuple[str, Callable[[BenchImage], float]]] = [
        ("ours_http", http),
        ("ours_inproc", inproc),
        ("peer", peer),
        ("floor_decode", decode_floor),
        ("floor_infer", infer_floor),
        ("floor_http", http_floor),
    ]
    warmup = 1
    deadline = time.perf_counter() + budget_s
    for i in range(warmup + reps):
        if i > warmup and time.perf_counter() > deadline:
            break
        img = images[i % len(images)]
        shift = i % len(sides)
        for side, call in sides[shift:] + sides[:shift]:
            ms = call(img)
            if i >= warmup:
                samples[side].append(ms)
            quiet = side in ("floor_decode", "floor_http")  # no model ran: nothing spins
            time.sleep(opts.settle_s if quiet else opts.settle_after_inference_s)

    full = full_decode_scores(ctx.service, images)
    for img in images:  # every image scored in standard mode at least once
        if img.key not in standard:
            standard[img.key] = float(ctx.service.pipeline.score(Source(data=img.data))["score"])
    shifts = [abs(standard[img.key] - f) for img, f in zip(images, full, strict=True)]

    result: dict[str, Any] = {name: summarize(values) for name, values in samples.items()}
    med = {side: result[side]["median"] for side in samples}
    floor = med["floor_decode"] + med["floor_infer"]
    floor_with_http = floor + med["floor_http"]
    pixels = image_class.size[0] * image_class.size[1]
    result.update(
        {
            "description": image_class.description,
            "size": list(image_class.size),
            "bits_per_pixel": [round(8 * len(img.data) / pixels, 2) for img in images],
            "stages_ms": {stage: summarize(v) for stage, v in stages.items()},
            "floor_ms": floor,
            "floor_with_http_ms": floor_with_http,
            "http_over_peer": ratio(med["ours_http"], med["peer"]),
            "http_over_floor": ratio(med["ours_http"], floor),
            # The best HTTP/peer any server could reach that decodes at our scale and runs this
            # model, before preprocessing and HTTP cost a millisecond.
            "floor_over_peer": ratio(floor, med["peer"]),
            # The same with the framework's own HTTP cost (functions-framework on gunicorn).
            "http_over_floor_with_http": ratio(med["ours_http"], floor_with_http),
            "floor_with_http_over_peer": ratio(floor_with_http, med["peer"]),
            "inproc_over_floor": ratio(med["ours_inproc"], floor),
            "draft_shift": {
                "max": max(shifts),
                "median": summarize(shifts)["median"],
                "per_image": dict(zip([img.key for img in images], shifts, strict=True)),
            },
            "peer_failures": peer_failures[:3],
        }
    )
    decode_ms = result["stages_ms"].get("decode", {}).get("median", float("nan"))
    ctx.log(
        f"class {name}: http {med['ours_http']:.1f} ms, in-process {med['ours_inproc']:.1f} "
        f"(decode {decode_ms:.1f}), peer {med['peer']:.1f}, floor {floor:.1f} "
        f"(decode {med['floor_decode']:.1f} + infer {med['floor_infer']:.1f}), "
        f"HTTP floor {med['floor_http']:.1f}; "
        f"http/peer {result['http_over_peer']:.2f}, http/floor {result['http_over_floor']:.2f}, "
        f"floor/peer {result['floor_over_peer']:.2f}, "
        f"(floor+HTTP)/peer {result['floor_with_http_over_peer']:.2f}; "
        f"draft shift max {result['draft_shift']['max']:.4f} "
        f"median {result['draft_shift']['median']:.4f} (n={result['ours_http']['n']})"
    )
    return result


def throughput_16(ctx: Any, images: list[BenchImage], phases: Any) -> dict[str, Any]:
    """16 clients on one class (camera 1080p) against the peer, as the throughput phase does."""
    options = dataclasses.replace(ctx.options, clients=(16,))
    return dict(phases.throughput_curve(dataclasses.replace(ctx, options=options), images))
