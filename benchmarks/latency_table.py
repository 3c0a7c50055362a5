"""Is the cheap layer actually fast? Declared ratios against measured time, every method, three presets.

    python benchmarks/latency_table.py                           # CPU: the table of docs/latency.md
    python benchmarks/latency_table.py --presets quickstart --threads 1 --batches 1 --repeat 3   # a quick look
    python benchmarks/latency_table.py --device cuda --dtypes float32,bfloat16 --threads 0       # on a GPU

For each preset (the WRN-28-10 student and the DARTS student at budget 0.1, the quickstart at 0.1
and 0.2) and every registered method (methods without a hyperparameter at their own size), the
deployable network (lowrank.deploy: eval mode, training-only heads removed, caches warm) is built
with ``substitute.method`` and ``substitute.budget`` set, and all of them, the dense network first,
are timed in ONE interleaved round robin per (threads, batch, dtype): every round calls every network
once, so each ratio to dense shares its background load. Columns: parameters and mult-adds as
fractions of dense (declared, ``lowrank count``), the measured time ratio (median of per-round
ratios) per setting, and "mult-adds mislead by": the time ratio over the mult-add ratio at the
last batch/threads setting (1 = time follows mult-adds; 10 = ten times slower than mult-adds
promise). ``--onnx`` also times the dense network and the FFT-based methods (acdc, afdf, block_acdc) in ONNX
Runtime, in one round robin with their eager runs: their ONNX ratio to dense ONNX, and ONNX ms over
eager ms of the same network. Writes Markdown (``--out``, default stdout) and ``--json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
PRESETS = {"wrn28_10_student": [0.1], "darts_student": [0.1], "quickstart": [0.1, 0.2]}
FFT_METHODS = ("acdc", "afdf", "block_acdc")


def networks_for(preset: str, budgets: list[float], methods: list[str] | None, device: str) -> tuple[list, list[dict]]:
    """(deployables with the dense one first, one description per network or per method that could not
    be built at that budget)."""
    from lowrank.config import load
    from lowrank.deploy.deployable import dense_config, from_config
    from lowrank.errors import BudgetError
    from lowrank.methods import get_method, list_methods

    path = REPO / "presets" / f"{preset}.yaml"
    base = load(path)
    dense = from_config(dense_config(base), device, label="dense")
    nets, rows = [dense], [{"preset": preset, "method": "dense", "budget": None, "label": "dense"}]
    names = [m.name for m in list_methods() if m.name != "dense" and (methods is None or m.name in methods)]
    for name in names:
        for budget in (budgets if get_method(name).hp is not None else [None]):
            overrides = [f"substitute.method={name}", "substitute.hp=null", "substitute.budget_params=null",
                         f"substitute.budget={'null' if budget is None else budget}", "substitute.options={}"]
            entry = {"preset": preset, "method": name, "budget": budget}
            try:
                net = from_config(load(path, overrides), device)
            except BudgetError as error:
                rows.append({**entry, "label": name, "error": error.detail})
                continue
            nets.append(net)
            rows.append({**entry, "label": net.label, "hp": net.hp, "params": net.params, "macs": net.macs})
    rows[0].update(params=dense.params, macs=dense.macs)
    return nets, rows


def measure_preset(preset: str, budgets: list[float], methods: list[str] | None, device: str, threads: list[int],
                   batches: list[int], dtypes: list[str], repeat: int, onnx: bool, progress) -> dict[str, Any]:
    """Every network of one preset timed per (dtype, threads, batch); ratios to the dense network."""
    from lowrank.deploy.latency import ratio_row, time_networks

    start = time.perf_counter()
    nets, rows = networks_for(preset, budgets, methods, device)
    built = [row for row in rows if "error" not in row]
    dense = built[0]
    for row in built:
        row["params_ratio"] = row["params"] / dense["params"]
        row["macs_ratio"] = row["macs"] / dense["macs"]
        row["times"] = {}
    for dtype in dtypes:
        timed = time_networks(nets, threads=threads, batches=batches, modes=["eager"], repeat=repeat, dtype=dtype,
                              progress=progress)
        _collect(built, timed, dtype, "eager", ratio_row)
        if onnx and dtype == "float32":  # dense and the FFT-based methods in both runtimes, one round robin
            picked = [0] + [i for i, row in enumerate(built) if row["method"] in FFT_METHODS]
            if len(picked) > 1:
                timed = time_networks([nets[i] for i in picked], threads=threads, batches=batches,
                                      modes=["eager", "onnx"], repeat=repeat, progress=progress)
                for row in timed:
                    row["network"] = picked[row["network"]]
                _collect(built, [row for row in timed if row["mode"] == "onnx"], dtype, "onnx", ratio_row)
                eager = {(r["threads"], r["batch"], r["network"]): r for r in timed if r["mode"] == "eager"}
                for row in (r for r in timed if r["mode"] == "onnx"):
                    same = eager[(row["threads"], row["batch"], row["network"])]
                    built[row["network"]].setdefault("onnx_vs_eager", {})[f"b{row['batch']} t{row['threads']}"] = \
                        row["timing"].median_ms / same["timing"].median_ms
    return {"preset": preset, "rows": rows, "seconds": time.perf_counter() - start}


def _collect(built: list[dict], timed: list[dict], dtype: str, mode: str, ratio_row) -> None:
    """Put each timed row's ratio to the dense network of its group under its network."""
    reference = {(r["threads"], r["batch"]): r for r in timed if r["network"] == 0}
    for row in timed:
        key = f"{dtype} {mode} b{row['batch']} t{row['threads']}"
        built[row["network"]]["times"][key] = ratio_row(row, reference[(row["threads"], row["batch"])])


def markdown(results: list[dict], environment: dict[str, Any]) -> str:
    """The tables of docs/latency.md: one per preset, then the 'mult-adds mislead' summary."""
    lines = [f"Measured on {environment['device_name']} ({environment['cores']} usable cores), torch "
             f"{environment['torch']}, {environment['date']}; `python benchmarks/latency_table.py "
             f"{environment['argv']}`. Ratios are to the dense network of the same preset, measured in the same "
             f"interleaved round robin (median of {environment['repeat']} per-round ratios; ± is their interquartile "
             f"range). Time ratios are per call of the whole deployable network (eval mode).", ""]
    for result in results:
        built = [row for row in result["rows"] if "error" not in row]
        keys = list(dict.fromkeys(key for row in built for key in row["times"]))
        lines += [f"### {result['preset']}", "",
                  "| network | hp | params × | mult-adds × | " + " | ".join(f"time × ({k})" for k in keys)
                  + " | mult-adds mislead by |",
                  "|---|---:|---:|---:|" + "---:|" * len(keys) + "---:|"]
        for row in built:
            cells = []
            for key in keys:
                timing = row["times"].get(key)
                cells.append("-" if timing is None else f"{timing['ratio']:.2f} ± {timing['ratio_iqr']:.2f}")
            last = next((row["times"][k] for k in reversed(keys) if k in row["times"] and "eager" in k), None)
            mislead = f"{last['ratio'] / row['macs_ratio']:.1f}×" if last and row["macs_ratio"] else "-"
            hp = "-" if row.get("hp") is None else f"{row['hp']:.4g}"
            lines.append(f"| {row['label']} | {hp} | {row['params_ratio']:.3f} | {row['macs_ratio']:.3f} | "
                         + " | ".join(cells) + f" | {mislead} |")
        for row in result["rows"]:
            if "error" in row:
                lines.append(f"| {row['label']}@{row['budget']} | - | - | - | "
                             + " | ".join("-" for _ in keys) + f" | not built: {row['error'][:80]} |")
        dense = built[0]
        absolute = ", ".join(f"{k}: {dense['times'][k]['dense_ms']:.2f} ms" for k in keys if k in dense["times"])
        lines += ["", f"dense per call: {absolute}; built and timed in {result['seconds']:.0f} s"]
        onnx = [row for row in built if row.get("onnx_vs_eager")]
        if onnx:
            lines.append("ONNX Runtime against eager PyTorch, same network (onnx ms / eager ms): " + "; ".join(
                f"{row['label']} " + ", ".join(f"{k} {v:.2f}" for k, v in row["onnx_vs_eager"].items()) for row in onnx))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated: " + ", ".join(PRESETS))
    parser.add_argument("--methods", default="", help="comma-separated methods (default: every registered one)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts ('all' = every usable core)")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--dtypes", default="float32", help="float32, bfloat16, float16 (comma-separated)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--onnx", action="store_true", help="ONNX Runtime rows for the FFT-based methods (float32)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: stdout)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    args = parser.parse_args(argv)

    import torch

    from lowrank.deploy.latency import environment, parse_threads

    presets = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = [name for name in presets if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; known: {', '.join(PRESETS)}")
    methods = [name.strip() for name in args.methods.split(",") if name.strip()] or None
    threads = parse_threads(args.threads) if args.device == "cpu" else [torch.get_num_threads()]
    batches = [int(value) for value in args.batches.split(",")]
    dtypes = [value.strip() for value in args.dtypes.split(",") if value.strip()]
    device = torch.device(args.device)
    env = {**environment(device, torch.float32), "date": datetime.date.today().isoformat(), "repeat": args.repeat,
           "argv": " ".join(argv if argv is not None else sys.argv[1:])}
    results = []
    for preset in presets:
        print(f"{preset}: building and timing ...", file=sys.stderr, flush=True)
        results.append(measure_preset(preset, PRESETS[preset], methods, args.device, threads, batches, dtypes,
                                      args.repeat, args.onnx,
                                      progress=lambda label: print(f"  {label}", file=sys.stderr, flush=True)))
    text = markdown(results, env)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
