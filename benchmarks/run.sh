#!/bin/bash
# Builds and runs the AMX microbenchmarks of BENCHMARKS.md ("Engine cost", commit 2413b4d) on this CPU.
# Needs g++ and a CPU with AMX (amx_bf16). Usage: benchmarks/run.sh [BUILD_DIR]
set -e
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/llmaccel-microbench}
mkdir -p "$out"
# the kernel's AMX helpers (tile config, split, decode, block products, scaling), verbatim
python3 - "$here/../src/llmaccel/kernels/gemm_amx.cpp" "$out/helpers.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
open(sys.argv[2], "w").write('#include "amx.h"\n' + s[s.index("constexpr int64_t AMX_ROWS"):s.index("// Panels [p0, p1), each block")])
PY
for f in amx_block amx_scaling tile_patterns store_then_tile_load tile_vector_overlap q8_decode; do
  g++ -O3 -march=native -ffp-contract=fast -I"$out" -I"$here/../src/llmaccel/kernels" -o "$out/$f" "$here/$f.cpp"
done
# tile_attention with a timestamp at each phase boundary
python3 - "$here/../src/llmaccel/kernels/decoder_layer.cpp" "$out/tile_attention_phases.inc" <<'PY2'
import sys
s = open(sys.argv[1]).read()
s = s[s.index("bool step_tiles = true;"):s.index("void add_into(")]
marks = [("#pragma omp barrier\n    // phase 2: items", "TMARK(0);\n#pragma omp barrier\n    TMARK(1);\n    // phase 2: items"),
         ("      if (mask)  // hidden keys", "      TMARK(2);\n      if (mask)  // hidden keys"),
         ("      // softmax numerators down the columns", "      TMARK(3);\n      // softmax numerators down the columns"),
         ("      for (int64_t j = 0; j < n; ++j) rowp[j] = vb +", "      TMARK(4);\n      for (int64_t j = 0; j < n; ++j) rowp[j] = vb +"),
         ("#pragma omp barrier\n    // phase 3", "TMARK(5);\n#pragma omp barrier\n    TMARK(6);\n    // phase 3"),
         ("  float* pl = buf.pl.get();\n  {\n", "  float* pl = buf.pl.get();\n  {\n    uint64_t tlast = __rdtsc();\n")]
for a, b in marks:
    assert a in s, a
    s = s.replace(a, b, 1)
i = s.rindex("  }\n}")
open(sys.argv[2], "w").write(s[:i] + "    TMARK(7);\n" + s[i:])
PY2
g++ -O3 -march=native -ffp-contract=fast -fopenmp -I"$out" -I"$here/../src/llmaccel/kernels" -o "$out/attention_phases" "$here/attention_phases.cpp"
g++ -O3 -march=native -ffp-contract=fast -I"$here/../src/llmaccel/kernels" -o "$out/vexp_check" "$here/vexp_check.cpp"
g++ -O2 -march=native -o "$out/tile_rows" "$here/tile_rows.cpp"
for v in FMA PERM SHIFT LOGIC; do g++ -O2 -march=native -D$v -o "$out/tile_port_overlap_$v" "$here/tile_port_overlap.cpp"; done
for lim in 4 2; do
  g++ -O3 -march=native -ffp-contract=fast -DLIM=$lim -I"$here/../src/llmaccel/kernels" -o "$out/attention_scores_$lim" "$here/attention_scores.cpp"
done
cd "$out"
echo "== tile_patterns (ns per block)"; for m in 0 1 2 3 5 7; do ./tile_patterns $m; done
echo "== tile_vector_overlap (ns per round)"; for m in 1 2 4 8 3 5 9 21 128 129 256 257; do ./tile_vector_overlap $m; done
echo "== store_then_tile_load (ns per round)"; for d in 0 1 4; do ./store_then_tile_load 7 $d; done
echo "== amx_block, K = 576 (18 blocks), 64 panels"
for parts in 1 2 4 3 5 6 7; do echo "parts $parts:"; ./amx_block x 18 64 $parts 2 | tail -2; done
echo "== amx_block, K = 1536 (48 blocks), 12 panels"; ./amx_block x 48 12 7 2 | tail -2
echo "== amx_block, K = 576, the four loops (parts 2 = tiles only, 5 = vector work only)"; for parts in 2 5; do ./amx_block x 18 64 $parts 2 | tail -5; done
echo "== amx_scaling (commit c80b2fd): the m term as tile products, column groups outermost"
./amx_scaling 18 64 16; NOM=1 ./amx_scaling 18 64 16 | tail -3; ./amx_scaling 48 12 16
echo "== tile_port_overlap (ns per round): batched vs interleaved vector work"
for v in FMA PERM SHIFT LOGIC; do ./tile_port_overlap_$v 2 1; for nf in 1 2 4; do ./tile_port_overlap_$v 3 $nf; ./tile_port_overlap_$v 0 $nf; ./tile_port_overlap_$v 1 $nf; done; done
echo "== attention_phases (us)"; OMP_NUM_THREADS=2 ./attention_phases 300 16; OMP_NUM_THREADS=1 ./attention_phases 300 16
echo "== q8_decode (ns per block)"; ./q8_decode
echo "== attention_scores, 9 part products"; ./attention_scores_4 320; ./attention_scores_4 1008
echo "== attention_scores, 6 part products"; ./attention_scores_2 320; ./attention_scores_2 1008
echo "== vexp_check"; ./vexp_check
echo "== tile_rows (ns per block)"; for r in 1 3 6 16; do ./tile_rows $r 3; ./tile_rows $r 1; done
