"""Score stage: PQ lookup-table scores, softmax statistics and the first radix level.

Grid (blocks, 1). The rows' valid tokens are cut into blocks of one length, chosen on
the device from seq_lens: the shortest with which all blocks are resident at once
(`slots`), so one wave whatever the lengths (cs_score_part). Block (row, split)
scores tokens [split*len, ...) of one (sequence, kv head) row with the group's lookup
table in shared memory, CS_U tokens a thread a step, the next step's codes in flight.
PASS bits:
  1  softmax statistics: per-head (max, sum exp) of the block; the row's last block
     folds them, in split order, into LSE.
  2  ranking scores r into rbuf (added to / maxed with the previous head tile's when
     not the first tile); on the last head tile also a 4096-bin histogram of the top
     12 key bits of the candidates, and the row's last block finds the bin that holds
     the K-th largest key (radix level 1).
max and mean run PASS 3. softmax_sum needs LSE before r, so it takes two passes:
  - filtered (one head tile, the plans' default): PASS 3 with MODE 0 ranks by
    v = sum_j exp(s_j - c_j), c_j = log E[exp s_j] estimated from the table, and the
    row's last block turns the bin of the K-th largest v and the heads' spread of
    c_j - LSE_j into a cut on v that no top-K token lies below; cs_rescore then scores
    only the tokens above the cut (about K + a few hundred a row) and hands them to the
    top-K as its candidate list. The first pass keeps v for it in sbuf, 16 bits rounded
    up (cs_bound16): half the bytes of a float written and read again. PASS 7 (fused,
    where every block is resident at once: a cooperative launch) does both in one
    launch: after the row's last block has published LSE and the cut, each block
    rescores its own tokens (cs_rescore_range) with the table it still holds, past a
    row barrier in global memory;
  - PASS 1 then PASS 2, each over every token. SAVE: 1 = PASS 1 also stores the
    per-head scores in sbuf; 2 = PASS 2 reads them back instead of the codes.
"""

SCORE = r"""
#define CS_HIST_BITS 12
#define CS_HIST (1 << CS_HIST_BITS)
// Tokens a thread scores a step, with the next step's codes in flight meanwhile (both
// score kernels). 2 beat 4, 3 and 1 (v16: batch16-128k 281.7 -> 255.9 us softmax_sum,
// 271.9 -> 256.1 max; fewer live registers at the 64-register cap).
#define CS_U 2

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
        total = cs_warp_sum(total);
        i64 lo64 = (total * Hkv + slots - 1) / slots;
        lo64 = (lo64 + 31) / 32 * 32;
        lo = lo64 < min_len ? (u32)min_len : (lo64 > hi0 ? hi0 : (u32)lo64);
        hi = hi0 > lo ? hi0 : lo;
    }
    while (lo < hi) {
        const u32 mid = (lo + hi) / 64 * 32;  // in [lo, hi - 32]
        i64 n = 0;
        for (int b = lane; b < B; b += 32) n += cs_row_blocks(length(b), mid);
        n = cs_warp_sum(n);
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
        incl = cs_warp_inscan(incl);
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

// PLANES: one plane's part of cs_lut_centres, sub-spaces 16 mh .. 16 mh + 15: the HP
// heads j0.. whose entry (m, c) is at base + (mh * P + c) * rb + (m % 16) * eb. Thread t
// reads entry f = t, t + NT, ... (c = f / 16, m % 16 = t % 16: a warp reads 2 whole rows,
// no bank conflict); lanes of equal m merge by butterfly, then the warps in order.
// scr: 2 * NW * 64 floats.
template <int HP, int P, int NT>
__device__ __forceinline__ void cs_centres_plane(const char* base, int rb, int eb, int mh, int C,
                                                 float log_c, float* scr, int j0, int gt,
                                                 float& acc) {
    constexpr int NW = NT / 32;
    static_assert(NT % 16 == 0, "a thread keeps one m % 16");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* smx = scr;            // [NW][16][4]
    float* ssm = scr + NW * 64;  // [NW][16][4]
    float mx[HP], sm[HP];
#pragma unroll
    for (int i = 0; i < HP; ++i) { mx[i] = -CS_FLT_MAX; sm[i] = 0.0f; }
    for (int f = threadIdx.x; f < 16 * P; f += NT) {
        if ((f >> 4) < C) {
            const char* e = base + (mh * P + (f >> 4)) * rb + (f & 15) * eb;
            float v[HP];
            if constexpr (HP == 4) {
                const float4 t = *reinterpret_cast<const float4*>(e);
                v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
            } else if constexpr (HP == 2) {
                const float2 t = *reinterpret_cast<const float2*>(e);
                v[0] = t.x; v[1] = t.y;
            } else {
                v[0] = *reinterpret_cast<const float*>(e);
            }
#pragma unroll
            for (int i = 0; i < HP; ++i) cs_stat_push(mx[i], sm[i], v[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < HP; ++i) {
        const float om = __shfl_xor_sync(CS_FULL, mx[i], 16);
        const float os = __shfl_xor_sync(CS_FULL, sm[i], 16);
        cs_stat_merge(mx[i], sm[i], om, os);
    }
    if (lane < 16) {
#pragma unroll
        for (int i = 0; i < HP; ++i) {
            smx[(warp * 16 + lane) * 4 + i] = mx[i];
            ssm[(warp * 16 + lane) * 4 + i] = sm[i];
        }
    }
    __syncthreads();
    if (threadIdx.x < 16 * HP) {  // (m % 16, head i): merge the warps in order
        const int k = (threadIdx.x / HP) * 4 + threadIdx.x % HP;
        float a = -CS_FLT_MAX, b = 0.0f;
        for (int w = 0; w < NW; ++w) cs_stat_merge(a, b, smx[w * 64 + k], ssm[w * 64 + k]);
        smx[k] = a + logf(b) - log_c;  // warp 0's slot of this thread's own column
    }
    __syncthreads();
    if ((int)threadIdx.x >= j0 && (int)threadIdx.x < min(j0 + HP, gt)) {
        for (int mm = 0; mm < 16; ++mm) acc += smx[mm * 4 + threadIdx.x - j0];
    }
    __syncthreads();
}

// softmax_sum's filter. Per-head centre c_j = sum_m log(mean_{c<C} exp(lut[m, c, j])),
// log E[exp s_j] for independent uniform codes (non-finite: 0). A token's v =
// sum_j exp(s_j - c_j), and with u_j = c_j - LSE_j its r = sum_j exp(s_j - c_j) exp(u_j)
// lies in [exp(min u) v, exp(max u) v]: the closer c_j tracks LSE_j, the tighter.
// Every block of a row builds the same table and reduces it in one fixed order, so all
// get the same bits. Skewed table: a pass per group of 8 sub-spaces and 4 heads (a
// contiguous 8 * P float4), thread t reading float4 t, t + NT, ..., so a quarter-warp
// reads 8 bank groups (lanes walking c of one (m, j) hit one bank: 32-way conflicts,
// measured +20 us on batch16-32k's first pass); lanes of equal m merge by butterfly,
// then the warps in order. PLANES: cs_centres_plane, plane by plane. scr: 2 * NT floats of
// scratch (PLANES: 4 * NT).
template <int GT, int GP, int M, int P, int NT>
__device__ void cs_lut_centres(const float* lut, int C, float* scr, float* cen) {
    constexpr int NW = NT / 32;
    typedef CsLayout<GT, GP, M, P> LY;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float log_c = logf((float)C);
    float acc = 0.0f;  // thread j < GT: sum over m, in m order
    if constexpr (LY::PLANES) {
        static_assert(4 * NT <= CS_HIST, "cs_centres_plane's scratch fits the histogram's");
        const char* lb = reinterpret_cast<const char*>(lut);
        for (int mh = 0; mh < M / 16; ++mh) {
            if constexpr (LY::A4)
                cs_centres_plane<4, P, NT>(lb, 256, 16, mh, C, log_c, scr, 0, GT, acc);
            if constexpr (LY::H2)
                cs_centres_plane<2, P, NT>(lb + LY::B2, 128, 8, mh, C, log_c, scr, 4 * LY::A4, GT, acc);
            if constexpr (LY::H1)
                cs_centres_plane<1, P, NT>(lb + LY::B1, 128, 8, mh, C, log_c, scr, GT - 1, GT, acc);
        }
    } else if constexpr (LY::SKEW) {
        static_assert(NT % 8 == 0, "a thread keeps one m % 8");
        const float4* l4 = reinterpret_cast<const float4*>(lut);
        float* smx = scr;            // [NW][8][4]
        float* ssm = scr + NW * 32;  // [NW][8][4]
        for (int blk = 0; blk < (M / 8) * LY::V; ++blk) {  // blk = (m / 8) * V + v
            float mx[4], sm[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) { mx[i] = -CS_FLT_MAX; sm[i] = 0.0f; }
            for (int f = threadIdx.x; f < 8 * P; f += NT) {  // c = f / 8, m % 8 = f % 8
                if ((f >> 3) < C) {
                    const float4 t = l4[(i64)blk * 8 * P + f];
                    cs_stat_push(mx[0], sm[0], t.x); cs_stat_push(mx[1], sm[1], t.y);
                    cs_stat_push(mx[2], sm[2], t.z); cs_stat_push(mx[3], sm[3], t.w);
                }
            }
#pragma unroll
            for (int o = 8; o < 32; o <<= 1) {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const float om = __shfl_xor_sync(CS_FULL, mx[i], o);
                    const float os = __shfl_xor_sync(CS_FULL, sm[i], o);
                    cs_stat_merge(mx[i], sm[i], om, os);
                }
            }
            if (lane < 8) {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    smx[(warp * 8 + lane) * 4 + i] = mx[i];
                    ssm[(warp * 8 + lane) * 4 + i] = sm[i];
                }
            }
            __syncthreads();
            if (threadIdx.x < 32) {  // (m % 8, head i) = (t / 4, t % 4): merge the warps in order
                float a = -CS_FLT_MAX, b = 0.0f;
                for (int w = 0; w < NW; ++w) cs_stat_merge(a, b, smx[w * 32 + threadIdx.x], ssm[w * 32 + threadIdx.x]);
                smx[threadIdx.x] = a + logf(b) - log_c;
            }
            __syncthreads();
            const int v = blk % LY::V;
            if (threadIdx.x < GT && (int)threadIdx.x / 4 == v) {
                for (int mm = 0; mm < 8; ++mm) acc += smx[mm * 4 + (threadIdx.x & 3)];
            }
            __syncthreads();
        }
    } else {
        // Other layouts (GP % 4 != 0 or M % 8 != 0): a warp per sub-space, lanes over c.
        float* part = scr;  // [GT][NW]
        for (int j = 0; j < GT; ++j) {
            float p = 0.0f;
            for (int m = warp; m < M; m += NW) {
                float mx = -CS_FLT_MAX, sm = 0.0f;
                for (int c = lane; c < C; c += 32)
                    cs_stat_push(mx, sm, cs_lut_entry<GT, GP, M, P>(lut, m, c, j));
                cs_warp_stat_merge(mx, sm);
                p += mx + logf(sm) - log_c;
            }
            if (lane == 0) part[j * NW + warp] = p;
        }
        __syncthreads();
        if (threadIdx.x < GT) {
            for (int w = 0; w < NW; ++w) acc += part[threadIdx.x * NW + w];
        }
    }
    if (threadIdx.x < GT) cen[threadIdx.x] = isfinite(acc) ? acc : 0.0f;
    __syncthreads();
}

// The filter's cut, as a key on v, from the bin b1 that holds the K-th largest v (so at
// least K tokens have v >= vlo, its lower edge): a token with v < vlo * exp(-(max u -
// min u)) has r < exp(min u) * vlo, below each of those K, so it cannot be heavy. The
// margin (2^-10 + 2^-20 (|min u| + |max u|) in the exponent) covers the float rounding
// of v, r, u and this cut (each ~1e-5 relative at most, with every exp argument within
// +-88 where the terms are finite and normal); away from that range (a bound under
// e^-60, a spread over 64, a non-finite LSE or edge) the cut is 0: every token passes.
template <int GT>
__device__ __forceinline__ u32 cs_filter_cut(int b1, const float* cen, const float* lse) {
    bool ok = true;
    float umin = CS_FLT_MAX, umax = -CS_FLT_MAX;
    for (int j = 0; j < GT; ++j) {
        const float u = cen[j] - lse[j];
        ok = ok && isfinite(u);
        umin = fminf(umin, u);
        umax = fmaxf(umax, u);
    }
    const float vlo = cs_key_value((u32)b1 << 20);
    const float spread = (umax - umin) + 0x1p-10f + (fabsf(umin) + fabsf(umax)) * 0x1p-20f;
    const float cut = vlo * __expf(-spread);
    ok = ok && vlo > 0.0f && isfinite(vlo) && spread < 64.0f && logf(vlo) + umin > -60.0f &&
         cut >= 0x1p-90f;
    return ok ? cs_key(cut) : 0u;
}

// softmax_sum's filter bound v (>= 0, never NaN) kept in 16 bits for the rescoring, its
// float bits rounded up (+inf stays +inf): v <= cs_bound16_value(cs_bound16(v)), so a
// token whose v reaches the cut still passes. Half the bytes of a float each way.
__device__ __forceinline__ u16 cs_bound16(float v) {
    return (u16)((__float_as_uint(v) + 0xffffu) >> 16);
}
__device__ __forceinline__ float cs_bound16_value(u32 h) { return __uint_as_float(h << 16); }

#define CS_RS_WARP 512  // tokens a warp filters in one step
#define CS_RS_LIST 768  // list entries a warp keeps (16-bit offsets)
// One block's part of the rescoring: tokens [start, end) of a row, with the table in
// lut and the row's LSE in lse_s. Sink and window positions (every position of a short
// row) are scored into rbuf; with heavy tokens, each warp filters its 1/NW of the block
// against the cut and scores the tokens that pass into its candidate segment, and the
// block adds their keys' top 12 bits to the row's histogram (shist, cleared here first:
// the caller's shared memory may hold the first pass's); the row's last block to finish
// then finds radix level 1 of those keys.
template <int GT, int GP, int M, int P, int VEC, int NT>
__device__ __forceinline__ void cs_rescore_range(
    const float* lut, const float* lse_s, int* shist, u16* lists, const u8* __restrict__ codes,
    float* __restrict__ rbuf, const u16* __restrict__ vbuf, int* __restrict__ hist,
    u64* __restrict__ cand, int* __restrict__ segcnt,
    u32* __restrict__ counters, int4* __restrict__ rowstate, int* scratch, int* res, int row,
    int N, int L, int S, int K, int W, int start, int end, i64 len, int split, int nsplit,
    int seg_stride, u32 cut, bool heavy) {
    constexpr int NW = NT / 32, U = 4;
    static_assert(32 % NW == 0 && CS_RS_WARP % 128 == 0, "NW divides len; 4 bounds a lane");
    const i64 rbase = (i64)row * N;
    const bool solo = nsplit == 1;  // the row's only block (v28)
    float lse_r[GT];
#pragma unroll
    for (int j = 0; j < GT; ++j) lse_r[j] = lse_s[j];
    const u8* crow = codes + rbase * M;
    if (heavy) {
        for (int i = threadIdx.x; i < CS_HIST; i += NT) shist[i] = 0;
    }
    __syncthreads();
    auto load = [&](int n, u32 (&w)[(M + 3) / 4]) {
        if (n >= 0) {
            cs_load_codes<M, VEC>(crow + (i64)n * M, w);
        } else {
#pragma unroll
            for (int i = 0; i < (M + 3) / 4; ++i) w[i] = 0u;
        }
    };
    auto score = [&](int n, u32 (&w)[(M + 3) / 4]) -> float {
        int off[M];
        cs_skew_offsets<GT, GP, M, P>(cs_phase<GT, GP, M, P>(n), off);
        float acc[GP];
        cs_token_scores<GT, GP, M, P>(lut, w, cs_phase<GT, GP, M, P>(n), off, acc);
        return cs_prob_sum<GT, GP>(acc, lse_r);
    };

    // Fixed positions, whose weight the top-K writes from rbuf.
    auto fixed = [&](int lo, int hi) {
        lo = max(lo, start);
        hi = min(hi, end);
        for (int n = lo + threadIdx.x; n < hi; n += NT) {
            u32 w[(M + 3) / 4];
            load(n, w);
            rbuf[rbase + n] = score(n, w);
        }
    };
    if ((i64)L <= (i64)S + K + W) {
        fixed(0, L);
    } else {
        fixed(0, S);
        fixed(L - W, L);
    }

    if (heavy) {
        // Warp w filters and rescores tokens [start + w * wlen, + wlen) on its own (no
        // block barrier) into its own segment, (row, split * NW + w), at the same offset.
        // v >= 0 and never NaN, so the cut compares as a float (key 0: -inf, all pass);
        // vbuf holds it rounded up (cs_bound16), so no token at or above the cut is lost.
        const float cutf = cut ? cs_key_value(cut) : CS_NEG_INF;
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        const int wlen = (int)(len / NW);  // len is a multiple of 32
        const int ws = (int)min((i64)start + (i64)warp * wlen, (i64)end);
        const int we = (int)min((i64)ws + wlen, (i64)end);
        const int hs = max(ws, S), he = min(we, L - W);
        const i64 seg = rbase + (i64)split * len + (i64)warp * wlen;
        const u16* vrow = vbuf + rbase;
        u16* wl = lists + warp * CS_RS_LIST;
        int kept = 0, cnt = 0, win = hs;  // list entries are offsets from win
        // Score the list (position order) into the segment, 32 * U entries at a time.
        auto flush = [&]() {
            for (int i0 = lane; i0 < cnt; i0 += 32 * U) {
                int n[U];
                u32 w[U][(M + 3) / 4];
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    const int i = i0 + u * 32;
                    n[u] = i < cnt ? win + wl[i] : -1;
                    load(n[u], w[u]);
                }
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    if (n[u] < 0) break;
                    const u32 key = cs_key(score(n[u], w[u]));
                    const i64 o = seg + kept + i0 + u * 32;
                    cand[o] = ((u64)key << 32) | (u64)(u32)n[u];
                    atomicAdd(&shist[key >> (32 - CS_HIST_BITS)], 1);
                }
            }
            kept += cnt;
            cnt = 0;
            __syncwarp();
        };
        // Steps of CS_RS_WARP tokens; the list is scored once it holds more than
        // CS_RS_LIST - CS_RS_WARP entries (full lanes: ~2% of tokens pass on the bench
        // inputs, so scoring each step's few took as long as the step).
        // Rows of N % 4 == 0 (8-byte aligned): 4 bounds a lane, 4 ballots a load.
        const bool vec = N % 4 == 0;
        for (int c0 = vec ? hs - (hs & 3) : hs; c0 < he; c0 += CS_RS_WARP) {
            if (cnt > CS_RS_LIST - CS_RS_WARP || c0 + CS_RS_WARP - win > 65535) {
                flush();
                win = c0;
            }
            if (vec) {
                const unsigned lt = (1u << lane) - 1u;
#pragma unroll
                for (int k = 0; k < CS_RS_WARP / 128; ++k) {
                    const int p = c0 + k * 128 + 4 * lane;
                    uint2 t = make_uint2(0u, 0u);
                    if (p < he) t = __ldcs(reinterpret_cast<const uint2*>(vrow + p));
                    const float x[4] = {
                        cs_bound16_value(t.x & 0xffffu), cs_bound16_value(t.x >> 16),
                        cs_bound16_value(t.y & 0xffffu), cs_bound16_value(t.y >> 16)};
                    bool f[4];
                    int below = 0, total = 0;
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        f[i] = p + i >= hs && p + i < he && x[i] >= cutf;
                        const u32 bal = __ballot_sync(CS_FULL, f[i]);
                        below += __popc(bal & lt);
                        total += __popc(bal);
                    }
                    int o = cnt + below;
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        if (f[i]) wl[o++] = (u16)(p + i - win);
                    }
                    cnt += total;
                }
            } else {
#pragma unroll
                for (int k = 0; k < CS_RS_WARP / 32; ++k) {
                    const int n = c0 + k * 32 + lane;
                    const bool f = n < he && cs_bound16_value(__ldcs(vrow + n)) >= cutf;
                    const u32 bal = __ballot_sync(CS_FULL, f);
                    if (f) wl[cnt + __popc(bal & ((1u << lane) - 1u))] = (u16)(n - win);
                    cnt += __popc(bal);
                }
            }
            __syncwarp();
        }
        flush();
        if (lane == 0) segcnt[(i64)row * seg_stride + (i64)split * NW + warp] = kept;
        if (!solo) cs_hist_flush<NT>(shist, hist + (i64)row * CS_HIST);
    }

    // The row's last block to finish (solo: its only one, with the histogram in shist,
    // unflushed): radix level 1 of the candidates' keys, and the segment length (a warp's
    // share of a block) for cs_topk.
    if ((solo || cs_last_block(counters + row, (u32)nsplit, scratch + 36)) && heavy) {
        cs_row_level1<NT>(solo, shist, hist + (i64)row * CS_HIST, K, scratch, res);
        if (threadIdx.x == 0) rowstate[row] = make_int4(res[0], res[1], res[2], (int)(len / NW));
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
    int cent_per_seq, int first_tile, int last_tile, u64* __restrict__ cand,
    int* __restrict__ segcnt, u64* __restrict__ gens,
    int seg_stride) {
    extern __shared__ float4 cs_smem4[];
    float* lut = reinterpret_cast<float*>(cs_smem4);
    float* qs = lut + M * P * GP;
    constexpr bool USE_LUT = SAVE != 2;
    int* shist = reinterpret_cast<int*>(USE_LUT ? qs + GT * M * DS : lut);
    __shared__ float red_m[GT][NT / 32], red_s[GT][NT / 32], lse_s[GT], cen_s[GT];
    __shared__ int scratch[40];
    __shared__ int part[5], res[4];
    __shared__ u32 cut_s;
    __shared__ u64 gen_s;
    // softmax_sum's filtered first pass: statistics, and v ranked in place of r.
    constexpr bool FILT = MODE == 0 && (PASS & 3) == 3;
    // PASS 7: the filtered first pass and the rescoring in one cooperative launch (every
    // block resident): after a row barrier each block rescores its own tokens with the
    // table it still holds, instead of a second kernel building a table a block again.
    constexpr bool FUSE = FILT && (PASS & 4);

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
        // The histogram's shared memory is scratch until it is cleared below.
        if constexpr (FILT) cs_lut_centres<GT, GP, M, P, NT>(lut, C, reinterpret_cast<float*>(shist), cen_s);
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
        else if constexpr (FILT) lse_r[j] = cen_s[j];  // the centres take LSE's place in v
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
    const int rot = cs_phase<GT, GP, M, P>(threadIdx.x);  // start: a multiple of 32
    int off[M];
    cs_skew_offsets<GT, GP, M, P>(rot, off);

    // The next step's codes are in flight while this one is scored (as in the
    // cooperative kernel).
    constexpr int MW = (M + 3) / 4;
    u32 wa[CS_U][MW];
    if constexpr (USE_LUT) cs_load_step<M, VEC, CS_U, NT>(crow, start + threadIdx.x, end, wa);
    for (int n0 = start + threadIdx.x; n0 < end; n0 += NT * CS_U) {
        float s[CS_U][GT];
        if constexpr (USE_LUT) {
            u32 wb[CS_U][MW];
            cs_load_step<M, VEC, CS_U, NT>(crow, n0 + NT * CS_U, end, wb);
#pragma unroll
            for (int u = 0; u < CS_U; ++u) {
                float acc[GP];
                cs_token_scores<GT, GP, M, P>(lut, wa[u], rot, off, acc);
#pragma unroll
                for (int j = 0; j < GT; ++j) s[u][j] = acc[j];
            }
#pragma unroll
            for (int u = 0; u < CS_U; ++u)
#pragma unroll
                for (int i = 0; i < MW; ++i) wa[u][i] = wb[u][i];
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
                // (FILT: v, with finite centres, so no term is NaN.) A tile's mean stays a
                // sum (inv_g 1) until the last tile divides.
                float r = cs_group_rank<GT, MODE>(s[u], lse_r, 1.0f);
                if (!first_tile) {
                    const float prev = rbuf[rbase + n];
                    r = MODE == 1 ? fmaxf(prev, r) : prev + r;
                }
                if (MODE == 2 && last_tile) r *= inv_g;
                if constexpr (FILT) reinterpret_cast<u16*>(sbuf)[rbase + n] = cs_bound16(r);
                else rbuf[rbase + n] = r;
                if (hist_on && n >= cand_lo && n < cand_hi)
                    atomicAdd(&shist[cs_key(r) >> (32 - CS_HIST_BITS)], 1);
            }
        }
    }

    const int split = part[1], nsplit = part[2];
    // A row's only block (rows no more than the SMs, v27) keeps its statistics and
    // histogram on chip: no flush, no hand-off, no read back (v28).
    const bool solo = nsplit == 1;
    if constexpr (PASS & 1) {
        float m, t;
        cs_block_stats<GT, NT>(mx, sm, red_m, red_s, m, t);
        if (!solo && threadIdx.x < GT)
            stats[((i64)row * G + h0 + threadIdx.x) * nsc + split] = make_float2(m, t);
    }
    if (hist_on && !solo) cs_hist_flush<NT>(shist, hist + (i64)row * CS_HIST);

    // FUSE, every block of the row once LSE and the cut are known: its own tokens'
    // rescoring, as cs_rescore does it.
    auto cs_fused_rescore = [&]() {
        if constexpr (FUSE) {
            __syncthreads();
            cs_rescore_range<GT, GP, M, P, VEC, NT>(
                lut, lse_s, shist, reinterpret_cast<u16*>(shist + CS_HIST), codes, rbuf,
                reinterpret_cast<const u16*>(sbuf), hist, cand, segcnt, counters,
                rowstate, scratch, res, row, N, L, S, K, W, start, end, len, split, nsplit,
                seg_stride, cut_s, hist_on);
        }
    };
    // FUSE: the generation of the row's barrier, read before this block arrives.
    if (FUSE && threadIdx.x == 0) gen_s = cs_ld_acquire(gens + row);
    if (!solo && !cs_last_block(counters + row, (u32)nsplit, scratch + 36)) {
        if constexpr (FUSE) {
            // Wait for the row's last block to publish LSE and the cut (below).
            if (threadIdx.x == 0) {
                while (cs_ld_acquire(gens + row) == gen_s) {
                }
            }
            __syncthreads();
            if (threadIdx.x < GT) lse_s[threadIdx.x] = __ldcg(lse + (i64)row * G + threadIdx.x);
            if (threadIdx.x == 0) cut_s = hist_on ? (u32)__ldcg(&rowstate[row].w) : 0u;
            cs_fused_rescore();
        }
        return;
    }

    if constexpr (PASS & 1) {
        // LSE of each head from the nsplit partials, in a fixed order; solo: from the
        // block's own (the same bits: merging one partial into (-FLT_MAX, 0) gives it).
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (solo && threadIdx.x < GT) {
            const float v = red_m[threadIdx.x][0] + logf(red_s[threadIdx.x][0]);
            lse[(i64)row * G + h0 + threadIdx.x] = v;
            lse_s[threadIdx.x] = v;
        }
        for (int j = solo ? GT : warp; j < GT; j += NT / 32) {
            const float2* src = stats + ((i64)row * G + h0 + j) * nsc;
            float m = -CS_FLT_MAX, t = 0.0f;
            for (int i = lane; i < nsplit; i += 32) {
                const float2 v = __ldcg(src + i);
                cs_stat_merge(m, t, v.x, v.y);
            }
            cs_warp_stat_merge(m, t);
            if (lane == 0) {
                lse[(i64)row * G + h0 + j] = m + logf(t);
                lse_s[j] = m + logf(t);
            }
        }
    }
    if (hist_on) {
        cs_row_level1<NT>(solo, shist, hist + (i64)row * CS_HIST, K, scratch, res);
        if (threadIdx.x == 0) {
            const u32 cut = FILT ? cs_filter_cut<GT>(res[0], cen_s, lse_s) : 0u;
            rowstate[row] = make_int4(res[0], res[1], res[2], (int)cut);
            cut_s = cut;
        }
    } else if (threadIdx.x == 0) {
        cut_s = 0u;
    }
    if constexpr (FUSE) {
        // Publish LSE, the cut and the cleared histogram to the row's other blocks.
        __syncthreads();
        if (threadIdx.x == 0) {
            __threadfence();
            cs_red_release(gens + row, 1ull);
        }
        cs_fused_rescore();
    }
}

// softmax_sum's filtered second pass, over the first pass's blocks (backwards: the v it
// wrote last are still in L2). Rows with heavy tokens: each warp takes its 1/NW of the
// block's tokens, CS_RS_WARP at a time (16 values a lane in flight), a ballot appends
// the ones above the cut to the warp's list (position order), and the warp scores them
// and writes (key of r, position) to its own candidate segment, counting r's top 12
// key bits; no block barrier until the end (one barrier-bound chunk loop for the whole
// block took 39 us on batch16-32k). The row's last block finds radix level 1 and
// records the segment length for cs_topk. Sink and window (every position of a short
// row) are scored directly and their r written to rbuf for their weights. A token is
// scored with rotation n % 8 as in the first pass: the same bits.
template <int GT, int GP, int M, int P, int DS, int QT, int CT, int CVEC, int LT, int VEC, int NT,
          int MINB>
__global__ void __launch_bounds__(NT, MINB) cs_rescore(
    const void* __restrict__ q, const void* __restrict__ cent, const u8* __restrict__ codes,
    const void* __restrict__ seq_lens, float* __restrict__ rbuf, const u16* __restrict__ vbuf,
    const float* __restrict__ lse, int* __restrict__ hist, u32* __restrict__ counters,
    int4* __restrict__ rowstate, u64* __restrict__ cand, int* __restrict__ segcnt, int Hkv,
    int G, int N, int C, int S, int K, int W, float scale, int B, int slots, int min_len,
    int seg_stride, int cent_per_seq) {
    extern __shared__ float4 cs_smem4[];
    float* lut = reinterpret_cast<float*>(cs_smem4);
    float* qs = lut + M * P * GP;
    int* shist = reinterpret_cast<int*>(qs + GT * M * DS);
    u16* lists = reinterpret_cast<u16*>(shist + CS_HIST);  // NW * CS_RS_LIST
    __shared__ float lse_s[GT];
    __shared__ int scratch[40];
    __shared__ int part[5], res[4];
    __shared__ u32 cut_s;

    cs_pdl_trigger();
    cs_score_part<LT>(seq_lens, B, Hkv, N, slots, min_len, gridDim.x - 1 - blockIdx.x, part);
    __syncthreads();
    const int row = part[0];
    if (row < 0) return;
    const int b = row / Hkv, g = row % Hkv;
    const int L = part[4];
    const bool heavy = K > 0 && (i64)L > (i64)S + K + W;
    const i64 len = (i64)part[3] << 5;
    const int start = (int)min((i64)part[1] * len, (i64)L);
    const int end = (int)min((i64)start + len, (i64)L);
    // The table, although only ~2% of the tokens are scored: computing their entries
    // from the centroids instead (same bits) took the pass from 38 to 90 us on
    // batch16-32k (16 dependent centroid loads a token).
    if (start < end) {
        const i64 q_off = ((i64)b * Hkv * G + (i64)g * G) * (M * DS);
        const i64 c_off = (cent_per_seq ? (i64)b * Hkv + g : (i64)g) * M * C * DS;
        cs_build_lut<GT, GP, M, P, DS, QT, CT, CVEC, NT>(lut, qs, q, q_off, cent, c_off, C, scale);
    }
    cs_pdl_wait();
    if (threadIdx.x < GT) lse_s[threadIdx.x] = lse[(i64)row * G + threadIdx.x];
    if (threadIdx.x == 0) cut_s = heavy ? (u32)rowstate[row].w : 0u;
    __syncthreads();
    cs_rescore_range<GT, GP, M, P, VEC, NT>(lut, lse_s, shist, lists, codes, rbuf, vbuf, hist,
                                            cand, segcnt, counters, rowstate,
                                            scratch, res, row, N, L, S, K, W, start, end, len,
                                            part[1], part[2], seg_stride, cut_s, heavy);
}
"""
