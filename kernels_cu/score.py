"""Score stage: PQ lookup-table scores, softmax statistics and the first radix level.

Grid (blocks, 1). The rows' valid tokens are cut into blocks of one length, chosen on
the device from seq_lens: the shortest with which all blocks are resident at once
(`slots`), so one wave whatever the lengths (cs_score_part). Block (row, split)
scores tokens [split*len, ...) of one (sequence, kv head) row with the group's lookup
table in shared memory, U tokens per thread in flight. PASS bits:
  1  softmax statistics: per-head (max, sum exp) of the block; the row's last block
     folds them, in split order, into LSE.
  2  ranking scores r into rbuf (added to / maxed with the previous head tile's when
     not the first tile); on the last head tile also a 4096-bin histogram of the top
     12 key bits of the candidates, and the row's last block finds the bin that holds
     the K-th largest key (radix level 1).
softmax_sum runs PASS 1 then PASS 2 (it needs LSE before r); max and mean run PASS 3.
SAVE: 1 = PASS 1 also stores the per-head scores in sbuf; 2 = PASS 2 reads them back
instead of the codes (chosen where they fit in L2, so the second pass costs no
lookup-table work and no HBM traffic).
"""

SCORE = r"""
#define CS_HIST_BITS 12
#define CS_HIST (1 << CS_HIST_BITS)
#define CS_U 4

// Blocks of a row of l tokens cut into blocks of len (at least one, for the row's last
// block to fold it). 32-bit: l <= N < 2^31 and len <= N rounded up to 32.
__device__ __forceinline__ u32 cs_row_blocks(u32 l, u32 len) {
    return l > len ? (l + len - 1) / len : 1u;
}

// The score partition: block blk's (row, split, splits of its row, len / 32, row length)
// in part[0..4].
// All rows' valid tokens go in blocks of one length len, the shortest multiple of 32
// (>= min_len) with which every block is resident at once (at most `slots` blocks; one
// block a row where even that does not fit): one wave whose longest block is as short
// as the lengths allow. Blocks in row order; past the last one, row = -1. Warp 0
// binary-searches len over the B lengths, 32 at a time (~10 steps on the SPEC shapes).
template <int LT>
__device__ __forceinline__ void cs_score_part(const void* seq_lens, int B, int Hkv, int N,
                                              int slots, int min_len, int blk, int* part) {
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    const u32 l0 = lane < B ? (u32)cs_seq_len<LT>(seq_lens, lane, N) : 0u;
    auto length = [&](int b) -> u32 { return b < 32 ? l0 : (u32)cs_seq_len<LT>(seq_lens, b, N); };
    const u32 hi0 = (u32)(((i64)N + 31) / 32 * 32);
    u32 lo, hi;
    // Rows of one length (the common case) need no search: nb blocks a row, as many as
    // fit (the search took 4-8 us of every block on batch16-32k / batch16-128k).
    const u32 l = __shfl_sync(CS_FULL, l0, 0);
    bool equal = true;
    for (int b = lane; b < B; b += 32) equal &= length(b) == l;
    if (__all_sync(CS_FULL, equal)) {
        const u32 rows = (u32)B * Hkv;
        u32 nb = (u32)slots / rows;
        const u32 most = l / (u32)min_len;
        nb = nb < most ? nb : most;
        nb = nb < 1 ? 1 : nb;
        const u32 len = ((l + nb - 1) / nb + 31) / 32 * 32;
        lo = hi = len < 32 ? 32 : len;
    } else {
        i64 total = 0;
        for (int b = lane; b < B; b += 32) total += length(b);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(CS_FULL, total, o);
        i64 lo64 = (total * Hkv + slots - 1) / slots;
        lo64 = (lo64 + 31) / 32 * 32;
        lo = lo64 < min_len ? (u32)min_len : (lo64 > hi0 ? hi0 : (u32)lo64);
        hi = hi0 > lo ? hi0 : lo;
    }
    while (lo < hi) {
        const u32 mid = (lo + hi) / 64 * 32;  // in [lo, hi - 32]
        i64 n = 0;
        for (int b = lane; b < B; b += 32) n += cs_row_blocks(length(b), mid);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(CS_FULL, n, o);
        if (n * Hkv <= slots) hi = mid;
        else lo = mid + 32;
    }
    const u32 len = lo;
    i64 before = 0;
    if (lane == 0) part[0] = -1;
    __syncwarp();
    for (int b0 = 0; b0 < B; b0 += 32) {
        const int b = b0 + lane;
        const int nb = b < B ? (int)cs_row_blocks(length(b), len) : 0;
        i64 incl = (i64)nb * Hkv;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const i64 y = __shfl_up_sync(CS_FULL, incl, o);
            if (lane >= o) incl += y;
        }
        const i64 ex = before + incl - (i64)nb * Hkv;
        if (b < B && blk >= ex && blk < before + incl) {
            const int j = (int)(blk - ex);
            part[0] = b * Hkv + j / nb;
            part[1] = j % nb;
            part[2] = nb;
            part[3] = (int)(len >> 5);  // len <= 2^31
            part[4] = (int)length(b);
        }
        before += __shfl_sync(CS_FULL, incl, 31);
        if (blk < before) break;
    }
}

template <int GT, int GP, int M, int P, int DS, int QT, int CT, int CVEC, int LT, int MODE,
          int PASS, int VEC, int SAVE, int NT, int MINB>
__global__ void __launch_bounds__(NT, MINB) cs_score(
    const void* __restrict__ q, const void* __restrict__ cent, const u8* __restrict__ codes,
    const void* __restrict__ seq_lens, float* __restrict__ rbuf, float* __restrict__ sbuf,
    float2* __restrict__ stats, float* __restrict__ lse, int* __restrict__ hist,
    u32* __restrict__ counters, int4* __restrict__ rowstate, int Hkv, int G, int N, int C,
    int S, int K, int W, float scale, int h0, int B, int slots, int min_len, int nsc,
    int cent_per_seq, int first_tile, int last_tile) {
    extern __shared__ float4 cs_smem4[];
    float* lut = reinterpret_cast<float*>(cs_smem4);
    float* qs = lut + M * P * GP;
    constexpr bool USE_LUT = SAVE != 2;
    int* shist = reinterpret_cast<int*>(USE_LUT ? qs + GT * M * DS : lut);
    __shared__ float red_m[GT][NT / 32], red_s[GT][NT / 32], lse_s[GT];
    __shared__ int scratch[40];
    __shared__ int part[5];

    // The second pass walks the blocks backwards: the first pass's last writes are
    // still in L2.
    constexpr bool REV = PASS == 2;
    cs_pdl_trigger();
    cs_score_part<LT>(seq_lens, B, Hkv, N, slots, min_len,
                      REV ? gridDim.x - 1 - blockIdx.x : blockIdx.x, part);
    __syncthreads();
    const int row = part[0];
    if (row < 0) return;
    const int b = row / Hkv, g = row % Hkv;
    const int D = M * DS;
    const int L = part[4];  // read by the partition: no second load on the way to the table
    const bool hist_on = (PASS & 2) && last_tile && K > 0 && (i64)L > (i64)S + K + W;
    // split and nsplit are read again from part after the token loop (registers).
    const i64 len = (i64)part[3] << 5;
    const int start = (int)min((i64)part[1] * len, (i64)L);  // a multiple of 32
    const int end = (int)min((i64)start + len, (i64)L);
    const i64 rbase = (i64)row * N;

    if (USE_LUT && start < end) {
        const i64 q_off = ((i64)b * Hkv * G + (i64)g * G + h0) * D;
        const i64 c_off = (cent_per_seq ? (i64)b * Hkv + g : (i64)g) * M * C * DS;
        cs_build_lut<GT, GP, M, P, DS, QT, CT, CVEC, NT>(lut, qs, q, q_off, cent, c_off, C, scale);
    }
    if (hist_on) {
        for (int i = threadIdx.x; i < CS_HIST; i += NT) shist[i] = 0;
    }
    cs_pdl_wait();  // the partition and the table read only inputs; the rest may not
    if constexpr (PASS == 2 && MODE == 0) {
        if (threadIdx.x < GT) lse_s[threadIdx.x] = lse[(i64)row * G + h0 + threadIdx.x];
    }
    __syncthreads();

    float mx[GT], sm[GT], lse_r[GT];
#pragma unroll
    for (int j = 0; j < GT; ++j) {
        mx[j] = -CS_FLT_MAX; sm[j] = 0.0f;
        if constexpr (PASS == 2 && MODE == 0) lse_r[j] = lse_s[j];
        else lse_r[j] = 0.0f;
    }
    const int cand_lo = S, cand_hi = L - W;
    const u8* crow = codes + rbase * M;
    // Saved scores (SAVE), GT floats a token: a token's side by side (16-byte accesses)
    // where GT % 4 == 0; else one plane of N floats a head, so no padding head is stored.
    // Measured against padded tokens on qwen-ragged (G = 7): passes 1 + 2 214 -> 204 us;
    // planes for G = 4 cost batch16-128k's second pass 3-4 us (four 4-byte loads).
    constexpr bool PLANES = GT % 4 != 0;
    float* sbase = sbuf + rbase * GT;
    const float inv_g = 1.0f / (float)G;
    const int rot = threadIdx.x & 7;
    int off[M];
    cs_skew_offsets<GP, M, P>(rot, off);

    for (int n0 = start + threadIdx.x; n0 < end; n0 += NT * CS_U) {
        float s[CS_U][GT];
        if constexpr (USE_LUT) {
            u32 w[CS_U][(M + 3) / 4];
#pragma unroll
            for (int u = 0; u < CS_U; ++u) {
                const int n = n0 + u * NT;
                if (n < end) {
                    cs_load_codes<M, VEC>(crow + (i64)n * M, w[u]);
                } else {
#pragma unroll
                    for (int i = 0; i < (M + 3) / 4; ++i) w[u][i] = 0u;
                }
            }
#pragma unroll
            for (int u = 0; u < CS_U; ++u) {
                float acc[GP];
                cs_token_scores<GP, M, P>(lut, w[u], rot, off, acc);
#pragma unroll
                for (int j = 0; j < GT; ++j) s[u][j] = acc[j];
            }
        } else {
#pragma unroll
            for (int u = 0; u < CS_U; ++u) {
                const int n = n0 + u * NT;
                if (n >= end) continue;
                if constexpr (PLANES) {
#pragma unroll
                    for (int j = 0; j < GT; ++j) s[u][j] = __ldcs(sbase + (i64)j * N + n);
                } else {
                    const float4* src = reinterpret_cast<const float4*>(sbase + (i64)n * GT);
#pragma unroll
                    for (int v = 0; v < GT / 4; ++v) {
                        const float4 t = __ldcs(src + v);
                        s[u][4 * v] = t.x; s[u][4 * v + 1] = t.y; s[u][4 * v + 2] = t.z; s[u][4 * v + 3] = t.w;
                    }
                }
            }
        }
#pragma unroll
        for (int u = 0; u < CS_U; ++u) {
            const int n = n0 + u * NT;
            if (n >= end) break;
            if constexpr (SAVE == 1) {
                if constexpr (PLANES) {
#pragma unroll
                    for (int j = 0; j < GT; ++j) sbase[(i64)j * N + n] = s[u][j];
                } else {
                    float4* dst = reinterpret_cast<float4*>(sbase + (i64)n * GT);
#pragma unroll
                    for (int v = 0; v < GT / 4; ++v)
                        dst[v] = make_float4(s[u][4 * v], s[u][4 * v + 1], s[u][4 * v + 2], s[u][4 * v + 3]);
                }
            }
#pragma unroll
            for (int j = 0; j < GT; ++j) s[u][j] = cs_clean(s[u][j]);
            if constexpr (PASS & 1) {
#pragma unroll
                for (int j = 0; j < GT; ++j) cs_stat_push(mx[j], sm[j], s[u][j]);
            }
            if constexpr (PASS & 2) {
                float r;
                if constexpr (MODE == 0) {
                    r = 0.0f;
#pragma unroll
                    for (int j = 0; j < GT; ++j) {
                        const float p = __expf(s[u][j] - lse_r[j]);
                        r += p == p ? p : 0.0f;
                    }
                } else if constexpr (MODE == 1) {
                    r = s[u][0];
#pragma unroll
                    for (int j = 1; j < GT; ++j) r = fmaxf(r, s[u][j]);
                } else {
                    r = s[u][0];
#pragma unroll
                    for (int j = 1; j < GT; ++j) r += s[u][j];
                }
                if (!first_tile) {
                    const float prev = rbuf[rbase + n];
                    r = MODE == 1 ? fmaxf(prev, r) : prev + r;
                }
                if (MODE == 2 && last_tile) r *= inv_g;
                rbuf[rbase + n] = r;
                if (hist_on && n >= cand_lo && n < cand_hi)
                    atomicAdd(&shist[cs_key(r) >> (32 - CS_HIST_BITS)], 1);
            }
        }
    }

    const int split = part[1], nsplit = part[2];
    if constexpr (PASS & 1) {
        float m, t;
        cs_block_stats<GT, NT>(mx, sm, red_m, red_s, m, t);
        if (threadIdx.x < GT) stats[((i64)row * G + h0 + threadIdx.x) * nsc + split] = make_float2(m, t);
    }
    if (hist_on) {
        __syncthreads();
        int* grow = hist + (i64)row * CS_HIST;
        for (int i = threadIdx.x; i < CS_HIST; i += NT) {
            const int c = shist[i];
            if (c) atomicAdd(grow + i, c);
        }
    }

    if (!cs_last_block(counters + row, (u32)nsplit, scratch + 36)) return;

    if constexpr (PASS & 1) {
        // LSE of each head from the nsplit partials, in a fixed order.
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        for (int j = warp; j < GT; j += NT / 32) {
            const float2* src = stats + ((i64)row * G + h0 + j) * nsc;
            float m = -CS_FLT_MAX, t = 0.0f;
            for (int i = lane; i < nsplit; i += 32) {
                const float2 v = __ldcg(src + i);
                cs_stat_merge(m, t, v.x, v.y);
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const float om = __shfl_xor_sync(CS_FULL, m, o), ot = __shfl_xor_sync(CS_FULL, t, o);
                cs_stat_merge(m, t, om, ot);
            }
            if (lane == 0) lse[(i64)row * G + h0 + j] = m + logf(t);
        }
    }
    if (hist_on) {
        // Radix level 1: the bin b1 with above(b1) < K <= above(b1) + hist[b1], where
        // above(b) counts candidates in bins > b. Bins are walked from the top.
        int* grow = hist + (i64)row * CS_HIST;
        constexpr int PER = CS_HIST / NT;
        int loc[PER];
        int sum = 0;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int bin = CS_HIST - 1 - (threadIdx.x * PER + i);
            loc[i] = __ldcg(grow + bin);
            sum += loc[i];
        }
        int total;
        int run = cs_block_exscan<NT>(sum, total, scratch);
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int bin = CS_HIST - 1 - (threadIdx.x * PER + i);
            if (run < K && run + loc[i] >= K) rowstate[row] = make_int4(bin, run, loc[i], 0);
            run += loc[i];
        }
        __syncthreads();
        for (int i = threadIdx.x; i < CS_HIST; i += NT) grow[i] = 0;
    }
}
"""
