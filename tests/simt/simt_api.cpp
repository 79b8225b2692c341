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
