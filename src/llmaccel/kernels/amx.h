// The AMX tile unit's configuration and permission, shared by the kernels that use it
// (skinny_gemm.cpp: bf16 tiles for code-block weights; argmax_head.cpp: int8 tiles for the LM head).
#pragma once

#if defined(__AMX_TILE__)  // the x86 CPUs with the tile unit; the kernels use it only under their AMX checks

#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace llmaccel_amx {

// What ldtilecfg reads: palette 1, then per tile its bytes per row and its rows.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Not _tile_loadconfig: GCC declares its operand as 8 bytes, so stores to the rest of cfg may be
// dropped as dead (seen: garbage configs, a crash).
inline void load_tile_config(const TileConfig& cfg) { asm volatile("ldtilecfg %0" ::"m"(cfg)); }

// AMX needs the kernel's permission for its tile state, asked once per process.
inline bool tiles_permitted() {
  static const bool ok = [] {
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  }();
  return ok;
}

}  // namespace llmaccel_amx

#endif
