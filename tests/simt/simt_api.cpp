// C entry points of the SIMT emulator for ctypes (tests/test_cuda_on_cpu.py).
#include "simt_emu.h"

extern "C" {
// Rotates which schedule (forward, reverse, shuffled) each block of the next launches gets.
void simt_set_schedule_offset(int offset) { simt::runtime().schedule_offset = offset; }
// The message of the last launch error ("" if none since the last call).
const char* simt_last_message() {
  static std::string message;
  message = simt::runtime().last_message;
  simt::runtime().last_message.clear();
  return message.c_str();
}
}

extern "C" {
// The emulator's fp16 / bf16 round trips, for checking them against torch's conversions.
void simt_round_half(const float* in, float* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = __half2float(__float2half_rn(in[i]));
}
void simt_round_bfloat16(const float* in, float* out, long n) {
  for (long i = 0; i < n; ++i) out[i] = __bfloat162float(__float2bfloat16_rn(in[i]));
}
}
