// Stand-in for the CUDA header of this name when a .cu compiles as C++ on the CPU.
#pragma once
#include "../simt_emu.h"
