"""Markdown tables of benchmark results: inference per model and variant, training
throughput, and the paper's Table 6 side by side."""

from __future__ import annotations

TABLE6_COLUMNS = ("forward_ms", "backward_ms", "train_memory_mb", "inference_memory_mb", "model_mb")


def markdown_table(result: dict) -> str:
    """Table 1 / Table 6 style: params, GFLOPs, time, memory, model size; one line per model and variant."""
    lines = [f"Device: {result['device']}; input {result['size'][0]}x{result['size'][1]}; torch {result['torch']}; "
             f"measured matmul peak {result['matmul_peak_gflops_per_s']:.0f} GFLOP/s ({result['matmul_dtype']}). "
             "Peak memory: CUDA max allocated, or on CPU the benchmark process's peak RSS (torch included); "
             "'inference MB' (CPU): a fresh process's peak RSS in a batch-1 eager forward minus its RSS after "
             "importing torch.", ""]
    if any(row.get("inference_memory_mb") is not None for row in result["rows"]):  # CPU only
        lines += ["| model | inference MB (batch 1, fresh process) |", "|---|---|"]
        lines += [f"| {row['model']} | " + ("-" if row.get("inference_memory_mb") is None else
                                             f"{row['inference_memory_mb']:.0f}") + " |" for row in result["rows"]]
        lines += [""]
    lines += ["| model | params (M) | GFLOPs/img | model MB | variant | batch-1 ms | best img/s (batch) | "
              "peak memory MB | GFLOP/s | of matmul peak |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for variant, r in row["variants"].items():
            memory = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            if "runs" in r:  # an engine: say what it ran
                variant = f"{variant} ({r['runs']['engine']}, {r['runs']['precision']})"
            lines.append(f"| {row['model']} | {row['params_m']:.3f} | {row['gflops']:.1f} | {row['model_mb']:.1f} | "
                         f"{variant} | {r['latency_ms']:.1f} | {r['images_per_s']:.2f} ({r['best_batch']}) | {memory} | "
                         f"{r['achieved_gflops_per_s']:.0f} | {r['fraction_of_matmul_peak'] * 100:.0f}% |")
    return "\n".join(lines)


def training_markdown(result: dict) -> str:
    """Training throughput per model and input, fp32 beside bf16, with the device named."""
    lines = [f"Device: {result['device']}; batch {result['batch_size']}, {result['steps']} timed steps after one "
             f"warm-up; torch {result['torch']}. Images/s of the training step (forward, backward, SGD).", "",
             "| model | input | fp32 img/s | bf16 img/s | bf16 / fp32 |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        bf16 = row.get("bf16")
        lines.append(f"| {row['model']} | {row['input']} {row['size'][0]}x{row['size'][1]} | {row['fp32']:.2f} | "
                     + (f"{bf16:.2f} | {bf16 / row['fp32']:.1f}x |" if bf16 else "- (no native bf16) | - |"))
    return "\n".join(lines)


def table6_markdown(result: dict) -> str:
    """Table 6 side by side: each column as ours (ratio to SegNet here | in the paper)."""
    lines = [f"Device: {result['device']}; input {result['size'][0]}x{result['size'][1]}; torch {result['torch']}; "
             "fp32, training-mode forward/backward at batch 1 (median), training memory at batch 4 and inference "
             "memory at batch 1 (CPU: a fresh process's peak RSS minus its RSS after importing torch; CUDA: max "
             "allocated), model MB = fp32 parameters. Each cell: ours (its ratio to SegNet here; the same ratio in the paper's Table 6).", "",
             "| network | params (M) | forward ms | backward ms | train MB (batch 4) | inference MB | model MB |",
             "|---|---|---|---|---|---|---|"]

    def cell(row: dict, column: str) -> str:
        value = row.get(column)
        if value is None:
            return "-"
        ratio, paper = row.get(f"{column}_ratio"), row.get(f"{column}_paper_ratio")
        ratios = f"{ratio:.2f}x" if ratio is not None else "-"
        ratios += f"; paper {paper:.2f}x" if paper is not None else ""
        # a GPU's milliseconds are single digits: keep three significant figures there
        return f"{value:.0f} ({ratios})" if value >= 100 else f"{value:.3g} ({ratios})"

    for row in result["table6"]:
        lines.append(f"| {row['model']} | {row['params_m']:.1f} | " + " | ".join(cell(row, c) for c in TABLE6_COLUMNS)
                     + " |")
    return "\n".join(lines)
