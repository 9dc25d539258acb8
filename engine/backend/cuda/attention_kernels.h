// Memory-efficient causal grouped-query attention on the GPU (flash-attention style: tiles of queries and keys
// in shared memory, online softmax, fp32 throughout; no [seq, seq] matrix is ever formed). Plain C++ interface.
// CPU reference: engine/model/cpu_ops.h CausalAttention; tests/gpu/cuda_decoder_kernels_test.cc compares them.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace llmc::cuda {

// out = softmax(cap(scale * q k^T)) v per (sequence, query head), causal, with the CPU layouts (scale 0: 1 /
// sqrt(head_dim); cap(s) = softcap * tanh(s / softcap) when softcap > 0, else s):
// q [num_seqs * seq_len, heads * head_dim], k and v [num_seqs * seq_len, kv_heads * head_dim], out like q (device
// pointers, fp32, must not alias). Query head h reads kv head h / (heads / kv_heads). Token i attends to tokens
// j <= i of its own sequence, with sliding_window > 0 only to j > i - sliding_window, and with attn_chunk > 0 only to
// j of its own chunk of attn_chunk positions (j >= floor(i / attn_chunk) * attn_chunk, Llama 4). head_dim <= 256;
// heads a multiple of kv_heads. Launches on `stream` without synchronizing; returns "" or the error.
// Work: O(num_seqs * heads * seq_len * keys * head_dim) with keys = min(seq_len, sliding_window); memory: none
// beyond the inputs and output (85 KB of shared memory per 64 queries at head_dim 128).
std::string CausalAttentionDevice(const float* q, const float* k, const float* v, int64_t num_seqs, int64_t seq_len,
                                  int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t sliding_window,
                                  float* out, cudaStream_t stream = nullptr, float scale = 0.0f,
                                  float softcap = 0.0f, int64_t attn_chunk = 0);

// The same attention on bf16 tensor cores (flash_attention_bf16.cu), for the bf16 mode: q, k and v are bf16 bits
// (uint16, the layouts above, e.g. FloatToBf16Device of the fp32 ones), the probabilities are rounded to bf16
// before they multiply v, products accumulate in fp32 (~3e-3 relative, like the bf16 GEMMs), and `out` is fp32.
// No score matrix is formed; key/value tiles are double-buffered with cp.async. head_dim 64, 128 or 256
// (FlashAttentionBf16Supports; other widths: Blas::CausalAttentionGemm), pointers 16-byte aligned, compute
// capability 8.0 or later; otherwise, and for bad shapes, returns an error and launches nothing. Shared memory per
// block: 54 KB (head_dim 64, 128 queries), 102 KB (128, 128 queries) or 99 KB (256, 64 queries).
bool FlashAttentionBf16Supports(int64_t head_dim);
std::string FlashAttentionBf16Device(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t num_seqs,
                                     int64_t seq_len, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     int64_t sliding_window, float* out, cudaStream_t stream = nullptr,
                                     float scale = 0.0f, float softcap = 0.0f, int64_t attn_chunk = 0);

}  // namespace llmc::cuda
