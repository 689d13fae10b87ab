"""Block top-K stage: from the level-1 bin to one exact (key, position) threshold.

Grid (nsplit, B*Hkv) of TSPLIT_LEN-token splits. Every block compacts, in position
order, the candidates of its split whose key is in the row's bin b1 or above into its
own segment of the candidate buffer (a segment has room for a whole split, so it
cannot overflow), found by one float compare a token and kept as r's float bits: the
finish takes their keys. That is about K + |b1| tokens a row. The row's last block then
finds the need-th largest key of bin b1 (ties to the smaller position), working on the
segments as one flat list:
  - BITONIC and at most CS_BITONIC_CAP keys in the bin: a bitonic sort in shared
    memory of (key, ~position), descending; the need-th entry is the threshold;
  - otherwise cs_finish: a radix level (bits 19..8), then one warp's sort of the
    K-th key's top-24-bit group where it holds at most 32 keys, else a second level
    (bits 7..0) and, only when the K-th key is tied, an ordered scan for the tie cut.
That gives the threshold (T, pos_cut): a candidate is heavy iff key > T, or key == T
and position <= pos_cut. The flat list is in position order, so one prefix sum over
"is heavy" gives each heavy token its output slot: the merge-free index output.
LIST (softmax_sum, filtered): grid (1, B*Hkv); cs_rescore has already written the
candidate segments (the tokens above the filter's cut, about K + a few hundred a row),
so each row's one block goes straight to the finish.
"""

TOPK = r"""
#define CS_BITONIC_CAP 2048
#define CS_STAGE 4096

// Segment of flat index i (segoff: nseg + 1 exclusive offsets in shared memory).
__device__ __forceinline__ int cs_segment_of(const int* segoff, int nseg, int i) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (segoff[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// Three blocks an SM (40 registers; the shared memory is sized per launch): the
// compaction streams the ranking scores, so more blocks in flight is more loads in
// flight (v22: batch16-128k max / mean -5 us against two blocks at 56-63 registers).
template <int LT, int MODE, int BITONIC, int LIST, int NT>
__global__ void __launch_bounds__(NT, 3) cs_topk(
    const void* __restrict__ seq_lens, const float* __restrict__ rbuf,
    u64* __restrict__ cand, int* __restrict__ segcnt,
    u32* __restrict__ counters, const int4* __restrict__ rowstate, int* __restrict__ out_idx,
    float* __restrict__ out_w, int* __restrict__ out_cnt, int Hkv, int G, int N, int S, int K,
    int W, int split_len, int seg_stride) {
    // Dynamic shared memory (kernels_cu.topk_smem(seg_stride) bytes): the staged flat
    // list (key << 32 | position), the bitonic buffer aliased with the radix bins, and
    // the segment offsets.
    extern __shared__ u64 cs_topk_smem[];
    u64* stage = cs_topk_smem;                                    // CS_STAGE
    u64* work = stage + CS_STAGE;                                 // CS_BITONIC_CAP
    int* h = reinterpret_cast<int*>(work);                        // 4096 bins
    int* segoff = reinterpret_cast<int*>(work + CS_BITONIC_CAP);  // seg_stride + 1
    __shared__ int scratch[40];
    __shared__ u64 scratch64[33];
    __shared__ int found[8];
    __shared__ int tot[64];

    // Blocks in the opposite order of the score pass that wrote rbuf last (max / mean:
    // forwards; softmax_sum's second pass: backwards), so the first blocks read what is
    // still in L2 (measured: batch16-128k max top-K 72.0 -> 67.0 us).
    constexpr bool REV = MODE != 0;
    const int row = REV ? gridDim.y - 1 - blockIdx.y : blockIdx.y, b = row / Hkv;
    const int split = REV ? gridDim.x - 1 - blockIdx.x : blockIdx.x, nsplit = gridDim.x;
    cs_pdl_trigger();
    const int L = cs_seq_len<LT>(seq_lens, b, N);
    cs_pdl_wait();
    const int KT = S + K + W;
    const i64 obase = (i64)row * KT;
    const i64 rbase = (i64)row * N;
    const float inv_g = 1.0f / (float)G;
    constexpr bool WANT_W = MODE == 0;  // softmax_sum: weight = r / G; else cs_weights

    // ---- sink, window, short rows: fixed positions, written where they go ----
    if ((i64)L <= (i64)KT) {
        const int lo = split * split_len, hi = min(lo + split_len, L);
        for (int n = lo + threadIdx.x; n < hi; n += NT) {
            out_idx[obase + n] = n;
            if (WANT_W) out_w[obase + n] = rbuf[rbase + n] * inv_g;
        }
        if (split == 0) {
            for (int j = L + threadIdx.x; j < KT; j += NT) {
                out_idx[obase + j] = -1;
                out_w[obase + j] = 0.0f;
            }
            if (threadIdx.x == 0) out_cnt[row] = L;
        }
        return;
    }
    if (split == 0) {
        for (int j = threadIdx.x; j < S + W; j += NT) {
            const int dst = j < S ? j : j + K;
            const int n = j < S ? j : L - W + (j - S);
            out_idx[obase + dst] = n;
            if (WANT_W) out_w[obase + dst] = rbuf[rbase + n] * inv_g;
        }
        if (threadIdx.x == 0) out_cnt[row] = KT;
    }
    if (K == 0) return;  // uniform over the row: no block of it takes part below

    const int4 st = rowstate[row];
    const u32 b1 = (u32)st.x;
    // LIST: one block a row; cs_rescore wrote the candidate segments, one a warp of a
    // score block, of st.w tokens each.
    constexpr int IT = 4;  // keys a thread takes in one round (compaction and output)
    const int seg_len = LIST ? st.w : split_len;
    const int nseg = LIST ? (int)cs_row_blocks((u32)L, (u32)seg_len) : nsplit;
    if constexpr (!LIST) {
        // ---- every block: its split's candidates in bin b1 or above, in position order ----
        const int lo = max(split * split_len, S);
        const int hi = min(split * split_len + split_len, L - W);
        const i64 seg = rbase + (i64)split * split_len;

        // Rounds of IT keys a thread, RG rounds a group: a group's loads are all issued
        // before any is used (one memory latency a group, not one a round), and its RG
        // per-round counts go through one block scan as 16-bit fields of a u64 (a round
        // keeps at most NT * IT = 2048 < 2^16 tokens). Measured against one scan a round:
        // top-K stage 65 -> 62 us (batch16-128k), 36 -> 31 (qwen-ragged), 25.6 -> 23.5
        // (batch16-32k), at 64 registers (2 blocks an SM instead of 3; capped at 40
        // registers, spilling, it was slower than before).
        constexpr int RG = 4;
        static_assert(NT * IT < (1 << 16) && RG * 16 <= 64 && RG * IT <= 32, "packed round counts");
        // A token is a candidate iff its key >= b1 << 20, i.e. (NaN ranking as -inf, -0 as
        // +0) iff r >= thr, the float of that key. Where that key is at or below -inf's
        // (b1 <= 7: thr would be a NaN pattern), every token is one. The candidates keep
        // r's float bits; the finish takes their keys. So a token costs a compare, not a
        // key transform (v21). A candidate is one 8-byte store, (bits << 32 | position).
        const float thr = cs_key_value(b1 << 20);
        const bool all = (b1 << 20) <= cs_key(CS_NEG_INF);
        // Rows of a multiple of 4 tokens start 16-byte aligned: a thread's IT = 4 tokens
        // are one float4 load from the aligned position below lo (the first group's
        // thread 0 drops the tokens before lo). Else one load a token.
        static_assert(IT == 4, "a round's tokens are one float4");
        const bool v4 = (N & 3) == 0;
        const int a0 = v4 ? lo & ~3 : lo;
        int kept = 0;
        for (i64 g = a0; g < hi; g += NT * IT * RG) {
            const int g0 = (int)g, lim = hi - g0;  // positions g0 + rel, rel < lim: no overflow
            float vals[RG][IT];
#pragma unroll
            for (int r = 0; r < RG; ++r) {
                const int rel0 = r * NT * IT + threadIdx.x * IT;
                if (v4) {
                    // In the row: g0 + rel0 + 3 < round_up(hi, 4) <= N.
                    const float4 x = rel0 < lim
                        ? *reinterpret_cast<const float4*>(rbuf + rbase + g0 + rel0)
                        : make_float4(CS_NEG_INF, CS_NEG_INF, CS_NEG_INF, CS_NEG_INF);
                    vals[r][0] = x.x; vals[r][1] = x.y; vals[r][2] = x.z; vals[r][3] = x.w;
                } else {
#pragma unroll
                    for (int i = 0; i < IT; ++i)
                        vals[r][i] = rel0 + i < lim ? rbuf[rbase + g0 + rel0 + i] : CS_NEG_INF;
                }
            }
            u32 flags = 0u;  // bit r * IT + i: token [r][i] is kept
#pragma unroll
            for (int r = 0; r < RG; ++r) {
#pragma unroll
                for (int i = 0; i < IT; ++i) {
                    const bool f =
                        r * NT * IT + threadIdx.x * IT + i < lim && (all || vals[r][i] >= thr);
                    flags |= (u32)f << (r * IT + i);
                }
            }
            if (threadIdx.x == 0 && g == a0) flags &= ~0u << (lo - a0);
            u64 packed = 0ull;
#pragma unroll
            for (int r = 0; r < RG; ++r)
                packed |= (u64)__popc((flags >> (r * IT)) & 0xfu) << (16 * r);
            u64 total;
            const u64 ex = cs_block_exscan<NT>(packed, total, scratch64);
#pragma unroll
            for (int r = 0; r < RG; ++r) {
                int o = kept + (int)((ex >> (16 * r)) & 0xffffu);
#pragma unroll
                for (int i = 0; i < IT; ++i) {
                    const bool f = flags >> (r * IT + i) & 1u;
                    cs_stcg_if(f, cand + seg + o,
                               ((u64)__float_as_uint(vals[r][i]) << 32) |
                                   (u64)(u32)(g0 + r * NT * IT + threadIdx.x * IT + i));
                    o += f;
                }
                kept += (int)((total >> (16 * r)) & 0xffffu);
            }
        }
        if (threadIdx.x == 0) segcnt[(i64)row * seg_stride + split] = kept;

        if (!cs_last_block(counters + row, (u32)nsplit, scratch + 36)) return;
    }

    // ---- the row's last block: the segments as one flat list, in position order ----
    int carry = 0;
    for (int s0 = 0; s0 < nseg; s0 += NT) {
        const int s = s0 + threadIdx.x;
        const int v = s < nseg ? __ldcg(segcnt + (i64)row * seg_stride + s) : 0;
        int total;
        const int ex = cs_block_exscan<NT>(v, total, scratch);
        if (s < nseg) segoff[s] = carry + ex;
        carry += total;
    }
    if (threadIdx.x == 0) segoff[nseg] = carry;
    __syncthreads();
    const int flat = carry;  // about K + |b1| entries
    // Entry i as (key << 32 | position): staged in shared memory when it fits (one pass
    // of loads, many in flight), else read from the segments each time.
    const bool staged = flat <= CS_STAGE;
    auto load = [&](int i) -> u64 {
        const int s = cs_segment_of(segoff, nseg, i);
        const i64 idx = rbase + (i64)s * seg_len + (i - segoff[s]);
        const u64 c = __ldcg(cand + idx);  // high half, LIST: a key; else r's float bits
        const u32 hi = (u32)(c >> 32);
        const u32 key = LIST ? hi : cs_key(__uint_as_float(hi));
        return ((u64)key << 32) | (c & 0xffffffffull);
    };
    if (staged) {
        // Every load in flight before the first store (ncu: storing each entry as it came
        // took 31% of the list finish's stall samples).
        cs_load_then_store<NT, (CS_STAGE + NT - 1) / NT, u64>(
            flat, load, [&](int i, u64 e) { stage[i] = e; });
        __syncthreads();
    }
    auto at = [&](int i) -> u64 { return staged ? stage[i] : load(i); };

    const int need1 = K - st.y;  // 1 <= need1 <= |b1|
    const int cnt = st.z;
    u32 T;
    int pos_cut;
    if (BITONIC && cnt <= CS_BITONIC_CAP) {
        int npow = 1;
        while (npow < cnt) npow <<= 1;
        for (int i = threadIdx.x; i < npow; i += NT) work[i] = 0ull;
        if (threadIdx.x == 0) found[0] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < flat; i += NT) {
            const u64 e = at(i);
            if ((u32)(e >> 52) == b1) {
                const int slot = atomicAdd(&found[0], 1);  // order is irrelevant: we sort
                work[slot] = (e & 0xffffffff00000000ull) | (u64)(~(u32)e);
            }
        }
        __syncthreads();
        // Bitonic sort of (key, ~position), descending: larger key, then smaller position.
        for (int kk = 2; kk <= npow; kk <<= 1) {
            for (int jj = kk >> 1; jj > 0; jj >>= 1) {
                for (int i = threadIdx.x; i < npow; i += NT) {
                    const int p = i ^ jj;
                    if (p > i) {
                        const u64 a = work[i], c2 = work[p];
                        if (((i & kk) == 0) ? (a < c2) : (a > c2)) { work[i] = c2; work[p] = a; }
                    }
                }
                __syncthreads();
            }
        }
        const u64 e = work[need1 - 1];
        T = (u32)(e >> 32);
        pos_cut = (int)(~(u32)e);
        __syncthreads();
    } else {
        cs_finish<NT>(at, flat, b1, need1, h, tot, scratch, found, T, pos_cut);
    }

    // ---- merge-free heavy output: the flat list is in position order, so a prefix
    // sum over "passes the threshold" gives each heavy token its slot. A round's IT
    // sub-rounds are NT consecutive entries each, one a thread: shared loads without
    // bank conflicts and stores in runs; their counts go through one scan as 16-bit
    // fields (v23: the list finish 13.0 -> 11.6-12.0 us against IT consecutive entries
    // a thread) ----
    static_assert(IT * 16 <= 64 && NT < (1 << 16), "packed sub-round counts");
    int run = S;
    for (int t0 = 0; t0 < flat; t0 += NT * IT) {
        u64 e[IT];
        u64 packed = 0ull;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const int j = t0 + i * NT + threadIdx.x;
            e[i] = j < flat ? at(j) : 0ull;
            const u32 k = (u32)(e[i] >> 32);
            const bool f = j < flat && (k > T || (k == T && (int)(u32)e[i] <= pos_cut));
            packed |= (u64)f << (16 * i);
        }
        u64 total;
        const u64 ex = cs_block_exscan<NT>(packed, total, scratch64);
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const bool f = (packed >> (16 * i)) & 1ull;
            const int o = run + (int)((ex >> (16 * i)) & 0xffffu);
            cs_st_if(f, out_idx + obase + o, (int)(u32)e[i]);
            if (WANT_W) cs_st_if(f, out_w + obase + o, cs_key_value((u32)(e[i] >> 32)) * inv_g);
            run += (int)((total >> (16 * i)) & 0xffffu);
        }
    }
}
"""
