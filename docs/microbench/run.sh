#!/bin/bash
# Builds and runs the AMX microbenchmarks of BENCHMARKS.md ("Engine cost", session 16) on this CPU.
# Needs g++ and a CPU with AMX (amx_bf16). Usage: docs/microbench/run.sh [BUILD_DIR]
set -e
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/llmaccel-microbench}
mkdir -p "$out"
# the kernel's AMX helpers (tile config, split, decode, block products, scaling), verbatim
python3 - "$here/../../src/llmaccel/kernels/skinny_gemm.cpp" "$out/helpers.inc" <<'PY'
import sys
s = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(s[s.index("constexpr int64_t AMX_ROWS"):s.index("// Panels [p0, p1), each block")])
PY
for f in amx_block tile_patterns store_then_tile_load tile_vector_overlap q8_decode; do
  g++ -O3 -march=native -ffp-contract=fast -I"$out" -o "$out/$f" "$here/$f.cpp"
done
for lim in 4 2; do
  g++ -O3 -march=native -ffp-contract=fast -DLIM=$lim -I"$here/../../src/llmaccel/kernels" -o "$out/attention_scores_$lim" "$here/attention_scores.cpp"
done
cd "$out"
echo "== tile_patterns (ns per block)"; for m in 0 1 2 3 5 7; do ./tile_patterns $m; done
echo "== tile_vector_overlap (ns per round)"; for m in 1 2 4 8 3 5 9 21 128 129 256 257; do ./tile_vector_overlap $m; done
echo "== store_then_tile_load (ns per round)"; for d in 0 1 4; do ./store_then_tile_load 7 $d; done
echo "== amx_block, K = 576 (18 blocks), 64 panels"
for parts in 1 2 4 3 5 6 7; do echo "parts $parts:"; ./amx_block x 18 64 $parts 2 | tail -2; done
echo "== amx_block, K = 1536 (48 blocks), 12 panels"; ./amx_block x 48 12 7 2 | tail -2
echo "== q8_decode (ns per block)"; ./q8_decode
echo "== attention_scores, 9 part products"; ./attention_scores_4 320; ./attention_scores_4 1008
echo "== attention_scores, 6 part products"; ./attention_scores_2 320; ./attention_scores_2 1008
