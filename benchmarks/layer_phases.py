"""The fused decoder layer phase by phase (BENCHMARKS.md, "Engine cost", commit a20b1c2).

Copies the package to a temporary folder, puts an `rdtsc` timestamp after every phase of
`fused_layer`'s parallel region in the copy's `kernels/decoder_layer.cpp` (the extension then builds
under its own hash), runs steady loops of `LoadedModel.greedy` steps of k tokens over 300 cached
tokens (one process per k), and prints us a layer per phase and thread.

    .venv/bin/python benchmarks/layer_phases.py [--sizes 1,16] [--steps 300]

Phases (SmolLM2; the small-attention path at k=1, tile_attention at k>1): p1 RMSNorm + split, p2 q/k/v,
p3 barrier, p4 RoPE + cache, p5 barrier, p6 attention (k=1: items + barrier), p7 k=1: merge + barrier,
k>1: barrier, p8 split of the attention output, p9 o, p10 barrier, p11 RMSNorm + split, p12 gate,
p13 up, p14 SiLU, p15 barrier, p16 split of the SiLU output, p17 down, p18 the region's end.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = r'''
import sys, time, statistics, torch, llmaccel
k, reps = int(sys.argv[1]), int(sys.argv[2])
lm = llmaccel.load("smollm2-135m")
g = torch.Generator().manual_seed(0)
cache = lm.new_cache()
lm.forward(torch.randint(0, lm.vocab_size, (1, 300), generator=g), 0, cache, keep=1)
ts = []
for rep in range(reps):
    ids = torch.randint(0, lm.vocab_size, (1, k), generator=g)
    t = time.perf_counter()
    lm.greedy(ids, 300, cache, keep=k)
    ts.append(time.perf_counter() - t)
    cache.rollback_to(300)
print(f"k={k}: {statistics.median(ts[10:]) * 1e3:.2f} ms a step (median)", file=sys.stderr)
'''


def instrument(src: str, tsc_hz: float) -> str:
    stats = r'''#include <x86intrin.h>
#include <cstdio>
struct PhaseStats {
  uint64_t c[2][24] = {};
  uint64_t n = 0;
  ~PhaseStats() {
    if (!n) return;
    for (int t = 0; t < 2; ++t) {
      fprintf(stderr, "thread %d:", t);
      for (int i = 1; i < 24; ++i) if (c[t][i]) fprintf(stderr, " p%d=%.1f", i, c[t][i] / (double)n / TSC_MHZ);
      fprintf(stderr, "\n");
    }
  }
};
PhaseStats phase_stats;
'''.replace("TSC_MHZ", f"{tsc_hz / 1e6:.1f}")
    s = src.replace("bool fused_on = true;", stats + "bool fused_on = true;", 1)
    head = "    const int64_t t = omp_get_thread_num(), nth = omp_get_num_threads();\n"
    assert head in s
    s = s.replace(head, head + "    uint64_t ts = __rdtsc(); int ph = 0;\n"
                  "#define STAMP { uint64_t now = __rdtsc(); if (t < 2) phase_stats.c[t][++ph] += now - ts; ts = now; }\n", 1)
    a = s.index("    // attention block: q, k, v\n")
    b = s.index("  }\n}\n\n}  // namespace")
    out = []
    for ln in s[a:b].split("\n"):
        out.append(ln)
        if ln.strip().startswith(("#pragma omp barrier", "run_panel_range(", "rope_and_cache(", "silu_block(gu, I, act, 0, T, j0",
                                  "tile_attention_part(", "rows = prepare_rows", "llmaccel_gemm::PanelRows rows")):
            out.append("    STAMP")
    out.append("#pragma omp barrier\n    STAMP\n    if (t == 0) ++phase_stats.n;")
    return s[:a] + "\n".join(out) + s[b:]


def tsc_hz() -> float:
    for ln in Path("/proc/cpuinfo").read_text().splitlines():
        if ln.startswith("bogomips"):  # x86 under KVM: twice the TSC rate in MHz
            return float(ln.split(":")[1]) / 2 * 1e6
    raise SystemExit("no bogomips in /proc/cpuinfo: set the TSC rate by hand")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,16")
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp) / "llmaccel"
        shutil.copytree(ROOT / "src" / "llmaccel", pkg)
        f = pkg / "kernels" / "decoder_layer.cpp"
        f.write_text(instrument(f.read_text(), tsc_hz()))
        (Path(tmp) / "steps.py").write_text(STEPS)
        env = dict(os.environ, PYTHONPATH=tmp)
        for k in args.sizes.split(","):
            subprocess.run([sys.executable, str(Path(tmp) / "steps.py"), k, str(args.steps)], env=env, check=True)


if __name__ == "__main__":
    main()
