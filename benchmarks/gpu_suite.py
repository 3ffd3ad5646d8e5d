"""Every GPU figure the README calls pending, in one call: each part isolated and time-boxed.

    uv run --extra cuda python benchmarks/gpu_suite.py --out runs/gpu-suite   # one GPU, < 9 min
    uv run python benchmarks/gpu_suite.py --smoke --out /tmp/gpu-suite         # CPU, same paths

Each part runs in its own process with its own time box (and the suite in `--budget` seconds
in all); a part that crashes or runs out of time is recorded with its error, what it measured
before is kept, and the next part runs. Parts, in order:

  environment  GPU, driver, CUDA, torch, numba, numba-cuda (and what torch and Numba see)
  render       the CUDA renderer (benchmarks/render_gpu.py): exact and fast images/s at 256 px,
               100,000 points, the CPU renderer on every core, exact-mode pixel equality
  augment      the device augmentation batch benchmark (benchmarks/augment_batch.py) against
               timm's per-image PIL chain
  train_deit   DeiT-Tiny at 224 px through the engine (benchmarks/train_throughput.py):
               synthetic tensors on the device (compiled, eager), shards with device and with
               CPU augmentation, on-the-fly GPU rendering; each a ratio to compiled synthetic
  pretrain     the real `fractaldb pretrain supervised` on defaults (DeiT-Tiny recipe,
               --on-the-fly on the GPU, compile, fused AdamW, bf16) for --pretrain-steps steps
  train_mae    MAE ViT-B (He et al.'s decoder) as train_deit (no CPU-augmentation run)
  render_64    the CUDA renderer at 64 px, 4,000 points (the transfer study's gpu budget)
  contour      the contour (VisualAtom) kernel, benchmarks/contour.py: 512 px, 1,000 vertices x
               200 orbits, batches of 128 and 8,192 against hpca-uji's batched 0.019 ms per
               image, one CPU core in the same run, exact-mode equality with the CPU
  loader       the CPU shard loader (benchmarks/shards.py) on this machine's cores

--out receives gpu_suite.json (environment, every part's status and raw figures, and every
figure beside its goal from the README), gpu_suite.md (the same as tables, also printed) and
logs/PART.log; both files are rewritten after every part, so a cut-off call keeps what ran.
`--smoke` runs the same code on the CPU in tiny settings, the CUDA parts in Numba's simulator
(figures meaningless). Exit code 0 when every part passed, 1 when one failed or timed out, 2
(one line) on bad input or without a CUDA GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import io
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/shards.py is named like the `shards` package: keep this folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

RESULT_ENV = "GPU_SUITE_RESULT"  # where a part's process writes its figures (JSON)
JSON_NAME, MD_NAME = "gpu_suite.json", "gpu_suite.md"
DEIT, MAE_MODEL = "deit_tiny_patch16_224", "vit_base_patch16_224"


# ----------------------------------------------------------------------------------------
# Figures and their goals (from the README; None: the README states no goal for it)


@dataclass(frozen=True)
class Figure:
    """One reported number: which part measures it, under which key, and its goal."""

    part: str
    key: str
    label: str
    unit: str = ""
    goal: tuple[str, float] | None = None  # (">=", "<=" or "==", value)
    source: str = ""


_R = "README, Rendering on the GPU"
_T = "README, Datasets as WebDataset shards"
FIGURES: list[Figure] = [
    Figure("render", "gpu_exact_images_per_s", "GPU exact, 256 px / 100k points", "images/s",
           (">=", 50_000), _R),
    Figure("render", "gpu_fast_images_per_s", "GPU fast, 256 px / 100k points", "images/s"),
    Figure("render", "cpu_images_per_s_all_cores", "CPU renderer, all cores, same run",
           "images/s"),
    Figure("render", "ratio", "GPU exact / CPU all cores", "x"),
    Figure("render", "fractaldb_1k_seconds", "FractalDB-1k (1M images) render, exact", "s",
           ("<=", 20), _R + " (about 20 s)"),
    Figure("render", "pixel_equal_fraction", "exact mode: pixels equal to the CPU's", "",
           (">=", 1.0), _R + " (byte for byte)"),
    Figure("render", "images_equal_fraction", "exact mode: images identical to the CPU's", "",
           (">=", 1.0), _R + " (byte for byte)"),
    Figure("augment", "crop_ours_images_per_s", "device augmentation, crop + flip", "images/s"),
    Figure("augment", "crop_over_pil", "crop + flip: device / PIL per image (1 process)", "x"),
    Figure("augment", "recipe_ours_images_per_s", "device augmentation, DeiT recipe",
           "images/s"),
    Figure("augment", "recipe_over_pil", "DeiT recipe: device / PIL per image (1 process)", "x"),
    Figure("train_deit", "synthetic_compiled_images_per_s", "DeiT-Tiny 224: synthetic, compiled",
           "images/s", (">=", 12_000), "issue 24 (README goal)"),
    Figure("train_deit", "synthetic_eager_images_per_s", "DeiT-Tiny 224: synthetic, eager",
           "images/s"),
    Figure("train_deit", "compile_speedup", "DeiT-Tiny: compiled / eager (synthetic)", "x"),
    Figure("train_deit", "shards_images_per_s", "DeiT-Tiny 224: shards, device augmentation",
           "images/s", (">=", 11_000), _T),
    Figure("train_deit", "shards_ratio", "DeiT-Tiny: shards (device aug.) / synthetic", "",
           (">=", 0.9), _T),
    Figure("train_deit", "shards_cpu_augment_images_per_s", "DeiT-Tiny 224: shards, PIL in workers",
           "images/s"),
    Figure("train_deit", "shards_cpu_augment_ratio", "DeiT-Tiny: shards (PIL) / synthetic"),
    Figure("train_deit", "onthefly_images_per_s", "DeiT-Tiny 224: on-the-fly GPU rendering",
           "images/s"),
    Figure("train_deit", "onthefly_ratio", "DeiT-Tiny: on-the-fly / synthetic", "",
           (">=", 0.9), _R),
    Figure("pretrain", "exit_code", "`fractaldb pretrain` on defaults: exit code", "",
           ("==", 0), "issue 24 (the default path works)"),
    Figure("pretrain", "steps", "`fractaldb pretrain`: optimizer steps", ""),
    Figure("pretrain", "images_per_s", "`fractaldb pretrain`: images/s after the first log",
           "images/s"),
    Figure("pretrain", "wall_s", "`fractaldb pretrain`: wall time, start-up included", "s"),
    Figure("pretrain", "fallbacks", "`fractaldb pretrain`: defaults that fell back", "",
           ("==", 0), "issue 24 (fail soft, but none expected)"),
    Figure("train_mae", "synthetic_compiled_images_per_s", "MAE ViT-B 224: synthetic, compiled",
           "images/s"),
    Figure("train_mae", "synthetic_eager_images_per_s", "MAE ViT-B 224: synthetic, eager",
           "images/s"),
    Figure("train_mae", "compile_speedup", "MAE ViT-B: compiled / eager (synthetic)", "x"),
    Figure("train_mae", "shards_images_per_s", "MAE ViT-B 224: shards, device augmentation",
           "images/s"),
    Figure("train_mae", "shards_ratio", "MAE ViT-B: shards / synthetic", "", (">=", 0.9), _T),
    Figure("train_mae", "onthefly_images_per_s", "MAE ViT-B 224: on-the-fly GPU rendering",
           "images/s"),
    Figure("train_mae", "onthefly_ratio", "MAE ViT-B: on-the-fly / synthetic", "", (">=", 0.9),
           _R),
    Figure("render_64", "gpu_exact_images_per_s", "GPU exact, 64 px / 4k points", "images/s"),
    Figure("render_64", "gpu_fast_images_per_s", "GPU fast, 64 px / 4k points", "images/s"),
    Figure("render_64", "images_equal_fraction", "64 px exact: images identical to the CPU's",
           "", (">=", 1.0), _R + " (byte for byte)"),
    Figure("contour", "small_batch_ms_per_image", "contour GPU, batches of 128: 512 px, 1,000 "
           "vertices x 200 orbits", "ms", ("<=", 0.019), "hpca-uji batched (issue 38)"),
    Figure("contour", "large_batch_ms_per_image", "contour GPU, batches of 8,192 (same setting)",
           "ms"),
    Figure("contour", "cpu_ms_per_image", "contour CPU renderer, one core (same run)", "ms"),
    Figure("contour", "gpu_over_cpu_core", "contour: GPU best / one CPU core", "x"),
    Figure("contour", "images_equal_fraction", "contour exact: images identical to the CPU's",
           "", (">=", 1.0), "issue 38 (byte for byte)"),
    Figure("loader", "load_images_per_s_per_core", "shard loader (decode + crop) per core",
           "images/s", (">=", 1500), "benchmarks/shards.py floor (issue 2)"),
    Figure("loader", "on_the_fly_images_per_s_per_worker", "CPU on-the-fly per loader worker",
           "images/s", (">=", 400), "benchmarks/shards.py floor (issue 2)"),
]  # fmt: skip


def goal_text(goal: tuple[str, float] | None) -> str:
    """`>= 50,000`, or an empty string for no goal."""
    if goal is None:
        return ""
    op, value = goal
    return f"{op} {value:,.0f}" if value >= 100 else f"{op} {value:g}"


def meets(value: Any, goal: tuple[str, float] | None) -> bool | None:
    """Whether value meets goal (None when there is no goal or no value)."""
    if goal is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    op, target = goal
    return {">=": value >= target, "<=": value <= target, "==": value == target}[op]


def collect_figures(parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every FIGURES entry with its value from `parts` (None where its part did not measure
    it), its goal and whether it meets it."""
    rows = []
    for f in FIGURES:
        part = parts.get(f.part, {})
        value = part.get("figures", {}).get(f.key)
        rows.append({
            "part": f.part, "key": f.key, "label": f.label, "value": value, "unit": f.unit,
            "goal": {"op": f.goal[0], "value": f.goal[1]} if f.goal else None,
            "goal_text": goal_text(f.goal), "meets": meets(value, f.goal),
            "goal_source": f.source or None, "part_status": part.get("status", "not run"),
        })  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------
# Running parts: one process each, time-boxed


@dataclass
class Part:
    """A part of the suite: the command that measures it and its time box in seconds."""

    name: str
    argv: list[str]
    timeout: float
    env: dict[str, str] = field(default_factory=dict)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the part and everything it started (it leads its own process group)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_error_line(log: Path) -> str:
    """The line of a part's log that names its failure (the exception or `Error:` line)."""
    try:
        lines = [ln.split("\r")[-1].strip() for ln in log.read_text(errors="replace").split("\n")]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    for ln in reversed(lines):
        if ln.startswith("Error:") or (":" in ln and ln.split(":", 1)[0].endswith(("Error",
                                                                                  "Exception"))):  # fmt: skip
            return ln[:300]
    return lines[-1][:300] if lines else ""


def run_part(part: Part, logs: Path, seconds_left: float) -> dict[str, Any]:
    """Run one part in its own process group for at most min(its box, seconds_left); its
    status (ok, failed, timeout), seconds, error line and whatever figures it wrote."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{part.name}.log"
    timeout = max(1.0, min(part.timeout, seconds_left))
    with tempfile.TemporaryDirectory(prefix=f"gpu-suite-{part.name}-") as tmp:
        result = Path(tmp) / "result.json"
        env = {**os.environ, **part.env, RESULT_ENV: str(result)}
        t0 = time.perf_counter()
        with log.open("w") as out:
            proc = subprocess.Popen(part.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            try:
                rc = proc.wait(timeout=timeout)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc, status = None, "timeout"
            except BaseException:  # the suite itself is stopped: stop the part too
                _kill_group(proc)
                raise
        seconds = time.perf_counter() - t0
        try:
            figures = json.loads(result.read_text())
        except (OSError, ValueError):
            figures = {}
    entry: dict[str, Any] = {
        "status": status, "seconds": round(seconds, 2), "timeout_s": round(timeout, 1),
        "exit_code": rc, "log": str(log), "figures": figures,
    }  # fmt: skip
    if status == "timeout":
        entry["error"] = f"timed out after {timeout:.0f} s (figures measured before are kept)"
    elif status == "failed":
        entry["error"] = _last_error_line(log) or f"exit code {rc}"
    return entry


def run_parts(
    parts: list[Part], out: Path, budget: float, environment: dict[str, Any], smoke: bool,
    done: dict[str, Any] | None = None, echo: Callable[[str], None] = print,
) -> dict[str, Any]:  # fmt: skip
    """Run the parts in order inside `budget` seconds (after the parts already `done`),
    rewriting the JSON and Markdown reports in `out` after each; returns the report."""
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "suite": "benchmarks/gpu_suite.py", "smoke": smoke,
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": round(budget, 1), "environment": environment, "parts": dict(done or {}),
    }  # fmt: skip
    for part in parts:
        left = budget - (time.perf_counter() - t0)
        if left < 10:
            report["parts"][part.name] = {"status": "skipped", "seconds": 0.0,
                                          "error": "no time left in --budget", "figures": {}}  # fmt: skip
        else:
            echo(f"[gpu_suite] {part.name} (at most {min(part.timeout, left):.0f} s)...")
            report["parts"][part.name] = run_part(part, out / "logs", left)
            done = report["parts"][part.name]
            echo(f"[gpu_suite] {part.name}: {done['status']} in {done['seconds']:.1f} s"
                 + (f" ({done['error']})" if done.get("error") else ""))  # fmt: skip
        report["wall_s"] = round(time.perf_counter() - t0, 2)
        write_report(report, out)
    return report


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_report(report: dict[str, Any], out: Path) -> None:
    """gpu_suite.json and gpu_suite.md in `out`, each replaced atomically."""
    from fractaldb.core.atomic import write_text_atomically

    report["figures"] = collect_figures(report["parts"])
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / JSON_NAME, json.dumps(_plain(report), indent=1) + "\n")
    write_text_atomically(out / MD_NAME, markdown(report))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the machine, every figure beside its goal, then the parts."""
    env = report["environment"]
    head = "GPU suite" + (" (--smoke: CPU and Numba's simulator, figures meaningless)"
                          if report["smoke"] else "")  # fmt: skip
    lines = [
        f"## {head}", "",
        f"{env.get('gpu') or 'no GPU'}; driver {env.get('driver') or '-'}; CUDA "
        f"{env.get('cuda') or '-'}; torch {env.get('torch') or '-'}; numba "
        f"{env.get('numba') or '-'}; numba-cuda {env.get('numba_cuda') or '-'}; CPU "
        f"{env.get('cpu') or '-'}; {report['started_utc']}, {report.get('wall_s', 0):.0f} s",
        "", "| part | figure | value | goal | meets |", "|---|---|---:|---|---|",
    ]  # fmt: skip
    for f in report["figures"]:
        value = _fmt(f["value"]) + (f" {f['unit']}" if f["unit"] and f["value"] is not None
                                    else "")  # fmt: skip
        mark = {True: "yes", False: "**no**", None: ""}[f["meets"]]
        if f["value"] is None:
            mark = f"({f['part_status']})"
        lines.append(f"| {f['part']} | {f['label']} | {value} | {f['goal_text']} | {mark} |")
    lines += ["", "| part | status | seconds | note |", "|---|---|---:|---|"]
    for name, p in report["parts"].items():
        note = p.get("error") or ""
        fallbacks = p.get("figures", {}).get("fallbacks_seen")
        if fallbacks:
            note = (note + "; " if note else "") + "fell back: " + fallbacks
        note = note.replace("|", "\\|")
        lines.append(f"| {name} | {p['status']} | {p.get('seconds', 0):.1f} | {note} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# The environment, as the parent sees it (no torch, no CUDA in this process)


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def nvidia_smi() -> dict[str, str]:
    """name, driver and memory of GPU 0 from nvidia-smi (empty without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    fields = ["name", "driver_version", "memory.total", "compute_cap"]
    try:
        res = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if res.returncode != 0 or not res.stdout.strip():
        return {}
    values = [v.strip() for v in res.stdout.splitlines()[0].split(",")]
    return dict(zip(fields, values, strict=False))


def host_environment() -> dict[str, Any]:
    """Package versions, Python, the CPU and nvidia-smi's view of GPU 0."""
    from fractaldb.core.machine import describe_machine

    smi = nvidia_smi()
    return {
        "gpu": smi.get("name"), "driver": smi.get("driver_version"),
        "gpu_memory": smi.get("memory.total"), "compute_capability": smi.get("compute_cap"),
        "cuda": None, "torch": _version("torch"), "torchvision": _version("torchvision"),
        "timm": _version("timm"), "numba": _version("numba"), "numba_cuda": _version("numba-cuda"),
        "triton": _version("triton"), "numpy": _version("numpy"),
        "python": platform.python_version(), "cpu": describe_machine(),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------
# The parts (each runs in its own process: `gpu_suite.py --child NAME ...`)


class Recorder:
    """A part's figures, rewritten to $GPU_SUITE_RESULT after every update (so a part that
    dies later keeps what it measured)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.figures: dict[str, Any] = {}

    def update(self, figures: dict[str, Any]) -> None:
        """Add figures and write them out."""
        self.figures.update(figures)
        if self.path is not None:
            from fractaldb.core.atomic import write_text_atomically

            write_text_atomically(self.path, json.dumps(_plain(self.figures)))


def load_benchmark(name: str):
    """benchmarks/NAME.py as the module NAME (registered, so worker processes unpickle it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def part_environment(args: argparse.Namespace, rec: Recorder) -> None:
    """What torch and Numba see: GPU name, memory, CUDA (torch's build, Numba's driver)."""
    import torch

    env: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "torch_cuda_available": torch.cuda.is_available(),
    }  # fmt: skip
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({
            "gpu": props.name, "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
        })  # fmt: skip
    rec.update(env)
    from fractaldb.gpu import SIMULATOR, cuda_available, numba_cuda_installed

    env = {"numba_cuda_installed": numba_cuda_installed(), "numba_simulator": SIMULATOR,
           "numba_cuda_available": cuda_available()}  # fmt: skip
    if env["numba_cuda_available"] and not SIMULATOR:
        from numba import cuda

        with contextlib.suppress(Exception):
            env["cuda_driver_api"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
        with contextlib.suppress(Exception):
            env["cuda_runtime_numba"] = ".".join(map(str, cuda.runtime.get_version()))
    with contextlib.suppress(Exception):
        import triton

        env["triton"] = triton.__version__
    rec.update(env)


def _render_args(args: argparse.Namespace, size: int, points: int, sample: int) -> list[str]:
    if args.smoke:
        return ["--image-size", "16", "--points", "200", "--categories", "2", "--batch", "4",
                "--seconds", "0", "--cpu-images", "2", "--sample", "2"]  # fmt: skip
    return ["--image-size", str(size), "--points", str(points), "--categories", "64",
            "--batch", "4096", "--seconds", str(args.render_seconds), "--sample", str(sample)]  # fmt: skip


def _render(args: argparse.Namespace, rec: Recorder, size: int, points: int, sample: int):
    rg = load_benchmark("render_gpu")
    report = rg.run(rg.parse_args(_render_args(args, size, points, sample)))
    report["images_equal_fraction"] = report["images_equal"] / report["sample_images"]
    rec.update(report)


def part_render(args: argparse.Namespace, rec: Recorder) -> None:
    """benchmarks/render_gpu.py at 256 px, 100,000 points: exact, fast, CPU, fidelity."""
    _render(args, rec, 256, 100_000, args.render_sample)


def part_render_64(args: argparse.Namespace, rec: Recorder) -> None:
    """benchmarks/render_gpu.py at 64 px, 4,000 points (the transfer study's gpu budget)."""
    _render(args, rec, 64, 4_000, 256)


def part_augment(args: argparse.Namespace, rec: Recorder) -> None:
    """benchmarks/augment_batch.py: this project's batched ops against timm's PIL chain."""
    ab = load_benchmark("augment_batch")
    argv = (["--device", "cpu", "--batch", "4", "--size", "40", "--out", "16", "--repeats",
             "1", "--pil-images", "2"] if args.smoke else
            ["--device", "cuda", "--batch", "256", "--repeats", "5", "--pil-images", "64"])  # fmt: skip
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = ab.main([*argv, "--json"])
    if rc != 0:
        raise RuntimeError(f"benchmarks/augment_batch.py exited {rc}")
    report = json.loads(buf.getvalue().strip().splitlines()[-1])
    figures: dict[str, Any] = {"device": report["device"], "batch": report["batch"]}
    for row in report["results"]:
        w = row["workload"]
        figures[f"{w}_ours_images_per_s"] = row["ours_images_per_s"]
        figures[f"{w}_pil_one_process_images_per_s"] = row["pil_one_process_images_per_s"]
        figures[f"{w}_over_pil"] = row["ours_images_per_s"] / row["pil_one_process_images_per_s"]
        for k in ("kornia_images_per_s", "ours_over_kornia"):
            if k in row:
                figures[f"{w}_{k}"] = row[k]
    rec.update(figures)


_TINY_VIT = ["patch_size=8", "depth=1", "embed_dim=32", "num_heads=2"]


def _train_args(args: argparse.Namespace, tt: Any) -> argparse.Namespace:
    """train_throughput.py's options for this suite (tiny on CPU with --smoke)."""
    if args.smoke:
        argv = ["--device", "cpu", "--img-size", "32", "--batch-size", "4", "--steps", "2",
                "--warmup", "1", "--workers", "0", "--amp", "none",
                *[a for kv in _TINY_VIT for a in ("--model-arg", kv)]]  # fmt: skip
    else:
        argv = ["--device", "cuda", "--img-size", "224", "--batch-size", str(args.train_batch),
                "--steps", str(args.train_steps), "--warmup", str(args.train_warmup),
                "--workers", str(min(16, tt.cores()))]  # fmt: skip
    return tt.parse_args(argv)


def _train_part(args: argparse.Namespace, rec: Recorder, task: str, model: str) -> None:
    """Compiled synthetic first (the ratios' base), then shards (device augmentation),
    on-the-fly GPU rendering, shards with CPU augmentation (supervised only) and eager."""
    tt = load_benchmark("train_throughput")
    rg = load_benchmark("render_gpu")
    targs = _train_args(args, tt)
    if task == "mae" and args.smoke:
        targs.set = ["decoder_depth=1", "decoder_dim=32", "decoder_heads=2"]
    # compiled runs: on a GPU only (compiling on the CPU takes minutes; the smoke run checks
    # the same calls eagerly)
    compiled = not args.smoke
    rec.update({"model": model, "device": tt.device_name(targs.device), "compiled": compiled,
                "batch_size": targs.batch_size, "img_size": targs.img_size,
                "steps": targs.steps, "warmup": targs.warmup})  # fmt: skip
    fallbacks: dict[str, str] = {}

    def note(source: str, result: dict[str, Any]) -> float:
        for what, why in result.get("fallbacks", {}).items():
            fallbacks[f"{source}: {what}"] = why
        if fallbacks:
            rec.update({"fallbacks_seen": "; ".join(fallbacks)})
        return result["images_per_s"]

    with tempfile.TemporaryDirectory(prefix="gpu-suite-shards-") as tmp:
        size = targs.img_size
        shards = tt.render_shards(Path(tmp), size, 2 if args.smoke else 16,
                                  8 if args.smoke else 32)  # fmt: skip
        from shards.loader import read_dataset_info

        targs.num_classes = int(read_dataset_info(shards)["num_classes"])
        targs.compile = compiled
        base = note("synthetic", tt.measure(task, model, "synthetic", targs, None))
        rec.update({"synthetic_compiled_images_per_s": base})
        rate = note("shards", tt.measure(task, model, "shards", targs, str(shards)))
        rec.update({"shards_images_per_s": rate, "shards_ratio": rate / base})
        # Numba's simulator runs each GPU thread as a Python thread: a few images, few points
        render = ({"image_size": 16, "points": 50} if args.smoke else
                  {"image_size": args.onthefly_size, "points": args.onthefly_points})  # fmt: skip
        cats = shards / "categories.json"
        rate = note("onthefly", rg.measure_onthefly(task, model, targs, cats, render))
        rec.update({"onthefly_images_per_s": rate, "onthefly_ratio": rate / base,
                    "onthefly_render": render})  # fmt: skip
        if task == "supervised":  # the PIL chain is the supervised recipe's reference
            source = "shards_cpu_augment"
            rate = note(source, tt.measure(task, model, source, targs, str(shards)))
            rec.update({f"{source}_images_per_s": rate, f"{source}_ratio": rate / base})
        targs.compile = False
        eager = note("eager", tt.measure(task, model, "synthetic", targs, None))
        rec.update({"synthetic_eager_images_per_s": eager, "compile_speedup": base / eager})


def part_train_deit(args: argparse.Namespace, rec: Recorder) -> None:
    """Supervised DeiT-Tiny at 224 px through the engine (benchmarks/train_throughput.py)."""
    _train_part(args, rec, "supervised", DEIT)


def part_train_mae(args: argparse.Namespace, rec: Recorder) -> None:
    """MAE ViT-B at 224 px (He et al.'s 8-block decoder) through the engine."""
    _train_part(args, rec, "mae", "vit_tiny_patch16_224" if args.smoke else MAE_MODEL)


def fractaldb_command() -> list[str]:
    """The installed `fractaldb` console script (beside this Python), else its entry point."""
    script = Path(sys.executable).with_name("fractaldb")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from fractaldb.cli import main; main()"]


def part_pretrain(args: argparse.Namespace, rec: Recorder) -> None:
    """`fractaldb pretrain supervised` on the defaults (DeiT-Tiny recipe, --on-the-fly on the
    GPU) for --pretrain-steps steps, as a user would run it."""
    import yaml

    from fractaldb.search import search_categories

    with tempfile.TemporaryDirectory(prefix="gpu-suite-pretrain-") as tmp:
        cats = Path(tmp) / "categories.json"
        if args.smoke:
            search_categories(2, sampler="sigma", seed=0).save(cats)
            batch, steps = 4, 2
            opts = ["--recipe", "tiny-cpu", "--device", "cpu", "--render-device", "cuda",
                    "--image-size", "16", "--points", "50", "--batch-size", str(batch),
                    "--set", "instances_per_category=4", "--log-every", "1"]  # fmt: skip
        else:
            search_categories(64, sampler="fractaldb", seed=1, workers=os.cpu_count()).save(cats)
            batch, steps = 1024, args.pretrain_steps  # the recipe's global batch
            opts = ["--recipe", "deit-tiny-fractaldb", "--log-every", "20"]
        run = Path(tmp) / "run"
        argv = [*fractaldb_command(), "pretrain", "supervised", *opts, "--on-the-fly", str(cats),
                "--epochs", "1", "--set", "warmup_epochs=0", "--samples-per-epoch",
                str(batch * steps), "--out", str(run)]  # fmt: skip
        rec.update({"command": "fractaldb " + " ".join(argv[len(fractaldb_command()) :])})
        print(" ".join(argv), flush=True)
        t0 = time.perf_counter()
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
        sys.stdout.write(res.stderr)
        rec.update({"exit_code": res.returncode, "wall_s": time.perf_counter() - t0})
        if res.returncode != 0:
            last = [ln.split("\r")[-1] for ln in res.stderr.strip().split("\n")]
            raise RuntimeError(f"fractaldb pretrain exited {res.returncode}: {last[-1][:300]}")
        entries = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        setup = next(e for e in entries if e["type"] == "setup")
        train = [e for e in entries if e["type"] == "train"]
        later = train[1:] or train  # the first window holds compilation and start-up
        seconds = sum(setup["global_batch"] / e["images_per_s"] for e in later)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        fallbacks = cfg.get("fallbacks") or {}
        rec.update({
            "steps": train[-1]["step"] if train else 0,
            "images_per_s": setup["global_batch"] * len(later) / seconds if later else None,
            "final_loss": train[-1]["loss"] if train else None, "compile": setup["compile"],
            "amp": setup["amp"], "render_device": cfg["render_device"],
            "augment": cfg["augment"], "fallbacks": len(fallbacks),
            **({"fallbacks_seen": "; ".join(f"{k}: {v}" for k, v in fallbacks.items())}
               if fallbacks else {}),
        })  # fmt: skip
        if not train or not math.isfinite(train[-1]["loss"]):
            raise RuntimeError("fractaldb pretrain logged no finite training loss")


def part_contour(args: argparse.Namespace, rec: Recorder) -> None:
    """benchmarks/contour.py's GPU figures: the contour kernel at the published setting."""
    rec.update(load_benchmark("contour").gpu_figures(args.smoke))


def part_loader(args: argparse.Namespace, rec: Recorder) -> None:
    """benchmarks/shards.py: the CPU loader and on-the-fly rates on this machine's cores."""
    argv = (["--generate-images", "32", "--images", "32", "--image-size", "16", "--points",
             "200", "--cores", "2", "--seconds", "0.2"] if args.smoke else
            ["--generate-images", "3200", "--images", "4000", "--seconds", "2"])  # fmt: skip
    res = subprocess.run([sys.executable, str(_HERE / "shards.py"), *argv, "--json"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
    sys.stdout.write(res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"benchmarks/shards.py exited {res.returncode}: "
                           f"{_tail(res.stderr)}")  # fmt: skip
    rec.update(json.loads(res.stdout.strip().splitlines()[-1]))


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# name -> (function, time box on a GPU in seconds, time box with --smoke: generous, since the
# smoke run shares a CPU with whatever else runs there)
PARTS: dict[str, tuple[Callable[[argparse.Namespace, Recorder], None], float, float]] = {
    "environment": (part_environment, 90, 900),
    "render": (part_render, 100, 900),
    "augment": (part_augment, 60, 900),
    "train_deit": (part_train_deit, 170, 900),
    "pretrain": (part_pretrain, 150, 900),
    "train_mae": (part_train_mae, 170, 900),
    "render_64": (part_render_64, 60, 900),
    "contour": (part_contour, 60, 900),
    "loader": (part_loader, 60, 900),
}


def child_main(args: argparse.Namespace) -> int:
    """Run one part in this process (the suite started it with --child NAME)."""
    func = PARTS[args.child][0]
    func(args, Recorder(os.environ.get(RESULT_ENV)))
    return 0


def plan_parts(args: argparse.Namespace, argv: list[str]) -> list[Part]:
    """The environment, then the parts --only / --skip leave, each as a `--child` command of
    this script."""
    names = [n for n in PARTS if n != "environment"]
    if args.only:
        names = [n for n in names if n in args.only]
    # the environment always runs first: the report names the machine, and it finds the GPU
    names = ["environment"] + [n for n in names if n not in args.skip]
    env = {"NUMBA_ENABLE_CUDASIM": "1"} if args.smoke else {}
    if args.smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the smoke run stays on the CPU even on a GPU host
    script = str(Path(__file__).resolve())
    return [
        Part(
            n, [sys.executable, script, *argv, "--child", n], PARTS[n][2 if args.smoke else 1], env
        )  # fmt: skip
        for n in names
    ]


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in PARTS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown part {', '.join(bad)}; fix: choose from {', '.join(PARTS)}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", help="folder for gpu_suite.json, gpu_suite.md and logs/")
    p.add_argument("--smoke", action="store_true", help="CPU and Numba's simulator, tiny sizes")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole suite [540, inside one 10-minute call; "
                   "3600 with --smoke, for a loaded CPU]")  # fmt: skip
    p.add_argument("--only", type=_names, default=[], help="comma-separated parts to run")
    p.add_argument("--skip", type=_names, default=[], help="comma-separated parts to leave out")
    p.add_argument("--render-seconds", type=float, default=5.0, help="per GPU render rate")
    p.add_argument("--render-sample", type=int, default=512, help="images compared with the CPU")
    p.add_argument("--train-batch", type=int, default=256, help="global batch (train parts)")
    p.add_argument("--train-steps", type=int, default=20, help="measured steps (train parts)")
    p.add_argument("--train-warmup", type=int, default=8, help="unmeasured steps (train parts)")
    p.add_argument("--onthefly-size", type=int, default=256, help="on-the-fly render size")
    p.add_argument("--onthefly-points", type=int, default=100_000, help="on-the-fly points")
    p.add_argument("--pretrain-steps", type=int, default=200, help="`fractaldb pretrain` steps")
    p.add_argument("--child", choices=list(PARTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 3600.0 if args.smoke else 540.0
    if args.child is None and not args.out:
        p.error("--out FOLDER is required (where the JSON and Markdown reports go)")
    if args.budget <= 0 or min(args.train_steps, args.pretrain_steps, args.train_batch) < 1:
        p.error("--budget > 0, and --train-steps, --pretrain-steps, --train-batch >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or, with --child, one part of it); see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    # a killed suite stops its running part (which leads its own process group) on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"Error: --out {out} is a file; fix: name a folder", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    first, *parts = plan_parts(args, argv)
    environment = host_environment()
    # the environment part runs before --out is touched: without a GPU the suite stops here
    with tempfile.TemporaryDirectory(prefix="gpu-suite-env-") as tmp:
        seen = run_part(first, Path(tmp), args.budget)
        log_text = Path(seen["log"]).read_text(errors="replace")
    if not args.smoke and not seen["figures"].get("torch_cuda_available"):
        why = seen.get("error") or "torch sees no CUDA GPU"
        print(f"Error: no usable CUDA GPU ({why}); fix: run on a machine with an NVIDIA GPU "
              "and driver, or pass --smoke for the CPU check", file=sys.stderr)  # fmt: skip
        return 2
    environment.update({k: v for k, v in seen["figures"].items() if v is not None})
    (out / "logs").mkdir(parents=True, exist_ok=True)
    seen["log"] = str(out / "logs" / "environment.log")
    Path(seen["log"]).write_text(log_text)
    budget = args.budget - (time.perf_counter() - t0)
    report = run_parts(parts, out, budget, environment, args.smoke, {"environment": seen})
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    write_report(report, out)
    print(markdown(report), end="")
    print(f"[gpu_suite] {out / JSON_NAME}, {out / MD_NAME}, logs in {out / 'logs'}")
    return 0 if all(p["status"] == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
