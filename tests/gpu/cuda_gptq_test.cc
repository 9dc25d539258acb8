// CudaGptqQuantize (engine/algo/cuda_gptq.h) against GptqQuantize: being written.
#include <gtest/gtest.h>
