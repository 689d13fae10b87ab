"""Weights stage of max and mean.

The merge-free index output itself is the last part of cs_topk (kernels_cu/topk.py):
sink and window ranges are written straight into their slots, and the heavy tokens,
kept in position order all the way, get their slots from one prefix sum. softmax_sum's
weight, r / G, is written there too.

cs_weights, grid (wsplit, B*Hkv), each block wch = ceil((S+K+W) / wsplit) entries: for
max and mean, re-scores only the selected tokens with the group's lookup table and
writes mean_h exp(s_h - LSE_h). One block a row where the rows fill the GPU: each block
builds a whole table (~4 us of latency), so more blocks a row only cost more tables
(measured on batch16-32k: 29.8 us with 3 blocks a row, 19.9 with one).
"""

INDEX = r"""
#define CS_WPER 8  // selected tokens a thread takes in one round

// Weights of the selected tokens for max / mean (one launch per head tile; the first
// tile writes, later ones add, the last divides by G). On sm_90 the table is built
// before the top-K ends (programmatic dependent launch), then the indices and codes
// are read; elsewhere the round's indices are loaded before the build and the codes
// right after, so their latencies overlap it (one round per block when
// wch <= NT * CS_WPER).
template <int GT, int GP, int M, int P, int DS, int QT, int CT, int CVEC, int VEC, int NT>
__global__ void __launch_bounds__(NT) cs_weights(
    const void* __restrict__ q, const void* __restrict__ cent, const u8* __restrict__ codes,
    const float* __restrict__ lse, const int* __restrict__ out_idx, float* __restrict__ out_w,
    int Hkv, int G, int N, int C, int KT, float scale, int h0, int wch, int cent_per_seq,
    int first_tile, int last_tile) {
    extern __shared__ float4 cs_smem4[];
    float* lut = reinterpret_cast<float*>(cs_smem4);
    float* qs = lut + M * P * GP;
    const int row = blockIdx.y, b = row / Hkv, g = row % Hkv;
    const int D = M * DS;
    const i64 lo = (i64)blockIdx.x * wch, hi = min(lo + wch, (i64)KT);
    const i64 q_off = ((i64)b * Hkv * G + (i64)g * G + h0) * D;
    const i64 c_off = (cent_per_seq ? (i64)b * Hkv + g : (i64)g) * M * C * DS;
    const u8* crow = codes + (i64)row * N * M;
    const i64 obase = (i64)row * KT;
    int nidx[CS_WPER];
    auto load_idx = [&](i64 base) {
#pragma unroll
        for (int u = 0; u < CS_WPER; ++u) {
            const i64 j = base + threadIdx.x + (i64)u * NT;
            nidx[u] = j < hi ? __ldcg(out_idx + obase + j) : -1;
        }
    };
#if __CUDA_ARCH__ >= 900
    // Launched as a programmatic dependent: the table is built while the top-K drains.
    cs_build_lut<GT, GP, M, P, DS, QT, CT, CVEC, NT>(lut, qs, q, q_off, cent, c_off, C, scale);
    cs_pdl_wait();
    load_idx(lo);
#else
    load_idx(lo);
    cs_build_lut<GT, GP, M, P, DS, QT, CT, CVEC, NT>(lut, qs, q, q_off, cent, c_off, C, scale);
#endif
    float lse_r[GT];
#pragma unroll
    for (int j = 0; j < GT; ++j) lse_r[j] = lse[(i64)row * G + h0 + j];
    // The selected tokens are not consecutive: walked from each token's phase, the lanes
    // of a quarter-warp would meet on bank groups (v24: the launch 20.8 -> 18.3 us on
    // batch16-32k, 19.5 -> 16.9 on qwen-ragged). The walk starts from the lane's phase, so
    // these sums may differ from the score pass's in the last bits: only weights (SPEC
    // rtol 1e-4) come from them, no selection.
    const int ph = cs_phase<GT, GP, M, P>((int)threadIdx.x);
    int off[M];
    cs_skew_offsets<GT, GP, M, P>(ph, off);
    for (i64 base = lo; base < hi; base += (i64)NT * CS_WPER) {
        if (base != lo) load_idx(base);
        u32 w[CS_WPER][(M + 3) / 4];
#pragma unroll
        for (int u = 0; u < CS_WPER; ++u) {
            if (nidx[u] >= 0) {
                cs_load_codes<M, VEC>(crow + (i64)nidx[u] * M, w[u]);
            } else {
#pragma unroll
                for (int i = 0; i < (M + 3) / 4; ++i) w[u][i] = 0u;
            }
        }
#pragma unroll
        for (int u = 0; u < CS_WPER; ++u) {
            const i64 j = base + threadIdx.x + (i64)u * NT;
            if (j >= hi) break;
            const int n = nidx[u];
            float wsum = 0.0f;
            if (n >= 0) {
                float acc[GP];
                cs_token_scores<GT, GP, M, P>(lut, w[u], ph, off, acc);
                wsum = cs_prob_sum<GT, GP>(acc, lse_r);
            }
            if (!first_tile) wsum += out_w[obase + j];
            if (last_tile) wsum *= 1.0f / (float)G;
            out_w[obase + j] = n >= 0 ? wsum : 0.0f;
        }
    }
}
"""
