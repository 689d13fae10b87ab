"""Cooperative path: the whole selection of a row by CL CTAs of one cooperative launch.

Grid (CL, B*Hkv), launched cooperatively so that every CTA is resident at once (the
driver refuses the launch otherwise: a CTA that waited on one never scheduled would
hang). CTA `rank` of row (b, g) owns positions [rank*chunk, (rank+1)*chunk) and keeps
their per-head scores in shared memory. The CTAs of a row exchange through a record
each in global memory (L2). The statistics and the level-0 counts are tagged words that
their readers poll (cs_xtag: no barrier, no fence), and so is the gathered bin (its
entries are nonzero once written); only the rare crowded-bin levels meet at a row
barrier (one thread: a release add and an acquire spin, ~0.7 us measured on the H100;
no cluster needed, so CL can be 16 or more, where clusters of 16 fit only 7 at once).
Phases, with the exchanges:
  score   lookup table (loads coalesced, first codes in flight meanwhile), scores of
          the chunk, per-head (max, sum exp) of the CTA, exported;
  [x1]    softmax_sum: every CTA polls the CL statistics, merges them (fixed order)
          into LSE, then computes r and the key of every token and a 4096-bin count of
          the top 12 key bits, exported; max / mean compute r and the counts first;
  [x2]    level 0: every CTA polls the 64-bin group sums of every CTA, finds the group
          that holds the K-th key, then polls that group's 64 bins of every CTA: the
          K-th key's bin b1, how many keys lie above it in each CTA, and how many in it;
  [x3]    gather (|b1| <= CS_COOP_GATHER_CAP, the usual case): each CTA writes its keys of
          bin b1 (key, position), in position order, at its offset of the row's list (one
          of two zero-kept buffers, by the launch's parity); every CTA polls the list
          until each entry is written and finishes the threshold alone;
  [B3,B4] otherwise two more levels (bits 19..8, then 7..0) the same way: the K-th key
          T, and per CTA the keys above T and equal to T;
  index   each CTA writes its heavy tokens in position order at S + (heavy tokens of
          the CTAs before it): a block prefix sum a step, no merge; where the CTA's
          candidates fit its threads, one candidate a thread, placed by ballots after
          one block barrier. Sink and window positions are written by the CTA that
          holds them; weights are computed for the chosen tokens only, from the scores
          kept on chip.
Every launch adds exactly CL * CS_COOP_NB arrivals to the row's counter (barriers, then
padding), so the counter never needs resetting: a launch's barrier i waits for
base + CL * (i + 1), and base / (CL * CS_COOP_NB) numbers the launch for the tags.
"""

COOP = r"""
#define CS_COOP_NB 4
#define CS_COOP_GATHER_CAP 2048
#define CS_COOP_MAX_CL 32
// One CTA's exchange record (ints): statistics (2 * GT <= 64 tagged 64-bit words), two
// levels of 4096 tagged counts (a level writes one while the previous may still be read),
// and their 64-bin group sums.
#define CS_X_HIST 128
#define CS_X_GROUP (128 + 2 * 4096)
#define CS_X_STRIDE (128 + 2 * 4096 + 2 * 64)

// Tagged exchange words (the idea of NCCL's low-latency protocol): every word a CTA
// exports carries the launch's and the phase's tag next to its value and is written by
// one store, so a reader that sees the tag sees the value. A reader polls the words it
// needs until their tags are current: no fence, no counter, no second round trip after a
// barrier. A count (< 2^16: the plan keeps chunks below it) shares a 32-bit word with a
// 16-bit tag, a float a 64-bit word with a 32-bit one. The tag is never 0 (the record
// starts zeroed) and only repeats 8192 launches later, long after the word was rewritten.
__device__ __forceinline__ u32 cs_xtag(u32 seq, int phase) {
    return ((seq & 0x1fffu) << 3) | (u32)(phase + 1);
}
__device__ __forceinline__ u64 cs_ld_relaxed(const u64* p) {
    u64 v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ uint4 cs_ld_relaxed4(const u32* p) {
    uint4 v;
    asm volatile("ld.relaxed.gpu.global.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
// A predicated relaxed 8-byte store (as cs_stcg_if): one a polled list entry, seen whole.
__device__ __forceinline__ void cs_st_relaxed_if(bool p, u64* a, u64 v) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %0, 0;\n\t"
                 "@q st.relaxed.gpu.global.b64 [%1], %2;\n\t}"
                 :: "r"((int)p), "l"(a), "l"(v) : "memory");
}
// The values of four tagged counts side by side (16-byte aligned), polled by 16-byte
// loads until every tag is `tag` (each 4-byte word is read whole: its tag vouches for it).
__device__ __forceinline__ void cs_xcount4(const u32* p, uint4 w, u32 tag, int (&v)[4]) {
    while (((w.x >> 16) != tag) | ((w.y >> 16) != tag) | ((w.z >> 16) != tag) |
           ((w.w >> 16) != tag))
        w = cs_ld_relaxed4(p);
    v[0] = (int)(w.x & 0xffffu); v[1] = (int)(w.y & 0xffffu);
    v[2] = (int)(w.z & 0xffffu); v[3] = (int)(w.w & 0xffffu);
}
// The float of a tagged 64-bit word, polled until its tag is `tag`.
__device__ __forceinline__ float cs_xfloat(const u64* p, u32 tag) {
    u64 v = cs_ld_relaxed(p);
    while ((u32)(v >> 32) != tag) v = cs_ld_relaxed(p);
    return __uint_as_float((u32)v);
}

// Barrier of the CTAs of one row: the block's writes (ordered before thread 0 by
// bar.sync) are released by thread 0's add; after the acquire spin and bar.sync every
// thread reads the peers' records (with ld.cg: L1 is not coherent).
__device__ __forceinline__ void cs_row_barrier(u64* ctr, u64 target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        cs_red_release(ctr, 1ull);
        while (cs_ld_acquire(ctr) < target) {
        }
    }
    __syncthreads();
}

// Per-head scores of listed local tokens tok(i), i < n, of a row's codes at crow, scored
// again from the table (every code load of a round in flight first), handed to
// use(i, t, acc). Token t walks from phase t as in the score loops: the same bits.
template <int GT, int GP, int M, int P, int VEC, int NT, typename TOK, typename USE>
__device__ __forceinline__ void cs_score_list(const float* lut, const u8* __restrict__ crow,
                                              int n, TOK tok, USE use) {
    constexpr int U = 4, MW = (M + 3) / 4;
    for (int i0 = threadIdx.x; i0 < n; i0 += NT * U) {
        int tk[U];
        u32 w[U][MW];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = i0 + u * NT;
            tk[u] = i < n ? tok(i) : -1;
            if (tk[u] >= 0) cs_load_codes<M, VEC>(crow + (i64)tk[u] * M, w[u]);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (tk[u] < 0) break;
            const int ph = cs_phase<GT, GP, M, P>(tk[u]);
            int o[M];
            cs_skew_offsets<GT, GP, M, P>(ph, o);
            float acc[GP];
            cs_token_scores<GT, GP, M, P>(lut, w[u], ph, o, acc);
            use(i0 + u * NT, tk[u], acc);
        }
    }
}

template <int GT, int GP, int M, int P, int DS, int QT, int CT, int CVEC, int LT, int MODE,
          int VEC, int NT, int KS>
__global__ void __launch_bounds__(NT, 1) cs_coop(
    const void* __restrict__ q, const void* __restrict__ cent, const u8* __restrict__ codes,
    const void* __restrict__ seq_lens, int* __restrict__ out_idx, float* __restrict__ out_w,
    int* __restrict__ out_cnt, u64* __restrict__ bars, int* __restrict__ xch,
    u64* __restrict__ glist, int Hkv, int G, int N, int C, int S, int K, int W, float scale,
    int chunk, int region1, int cent_per_seq, long long* __restrict__ prof) {
    constexpr int NW = NT / 32;
    extern __shared__ float4 cs_smem4[];
    float* lut = reinterpret_cast<float*>(cs_smem4);  // region 1: the table, then (!KS) ...
    float* sc = lut + region1;                        // (!KS) scores [chunk][GP]
    // ... the keys [chunk] over the dead table; KS: the keys after the table, which stays.
    u32* keys = reinterpret_cast<u32*>(KS ? sc : lut);
    int* hist = reinterpret_cast<int*>(sc + (i64)chunk * (KS ? 1 : GP));  // 4096 counts
    float* qs = reinterpret_cast<float*>(hist);       // (q, during the table build)
    int* call = hist;                                 // (after an export: [CL][64] group
    int* hg = hist + CS_COOP_MAX_CL * 64;             //  sums, [CL][64] bins of one group)
    u64* gl = reinterpret_cast<u64*>(hist + 4096);    // CS_COOP_GATHER_CAP: the row's bin list
    __shared__ float red_m[GT][NW], red_s[GT][NW], lse_s[GT], cen_s[GT];
    __shared__ int tot[64];
    __shared__ int abv[CS_COOP_MAX_CL], inb[CS_COOP_MAX_CL], goff[CS_COOP_MAX_CL + 1];
    __shared__ int scratch[40];
    __shared__ int found[8];
    __shared__ u64 base_s;

    const int CL = gridDim.x, rank = blockIdx.x, row = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int b = row / Hkv, g = row % Hkv;
    const int D = M * DS;
    const int L = cs_seq_len<LT>(seq_lens, b, N);
    const int KT = S + K + W;
    const bool do_sel = K > 0 && (i64)L > (i64)KT;
    const int start = rank * chunk;  // a multiple of 32: token t has t % 32 == tid % 32
    const int nloc = max(0, min(start + chunk, L) - start);
    const i64 obase = (i64)row * KT;
    const float inv_g = 1.0f / (float)G;
    u64* ctr = bars + (i64)row * 8;
    u32* xme = reinterpret_cast<u32*>(xch) + ((i64)row * CL + rank) * CS_X_STRIDE;
    auto xpeer = [&](int r) -> const u32* {
        return reinterpret_cast<const u32*>(xch) + ((i64)row * CL + r) * CS_X_STRIDE;
    };

    cs_mark(prof, 0);
    if (threadIdx.x == 0) {
        const u64 c = cs_ld_acquire(ctr);
        base_s = c - c % ((u64)CL * CS_COOP_NB);
    }
    if (threadIdx.x < CS_COOP_MAX_CL) abv[threadIdx.x] = 0;
    int nbar = 0, narr = 0;
    // A row of one CTA needs no barrier counter: bar.sync already makes the block's global
    // writes visible to the block.
    auto barrier = [&]() {
        ++nbar;
        if (CL == 1) {
            __syncthreads();
        } else {
            ++narr;
            cs_row_barrier(ctr, base_s + (u64)CL * nbar);
        }
    };
    // The arrivals this launch did not make. They come after every CTA of the row has
    // arrived at this CTA's last barrier, and only the next launch (ordered by the
    // stream) needs them, so a relaxed add suffices: a release add's fence cost thread 0,
    // and the block scan waiting on it, ~0.45 us (phase timers). A row of one CTA counts
    // its launches too: the exchange tags come from the count.
    auto pad_barriers = [&]() {
        if (threadIdx.x == 0 && narr < CS_COOP_NB)
            atomicAdd(reinterpret_cast<unsigned long long*>(ctr),
                      (unsigned long long)(CS_COOP_NB - narr));
    };

    // ---------------- score ----------------
    constexpr int MW = (M + 3) / 4;
    const u8* crow = codes + ((i64)row * N + start) * M;
    const int cand_lo = S - start, cand_hi = L - W - start;  // candidate range, local
    const int lo = max(cand_lo, 0), hi = min(cand_hi, nloc);
    // The first step's codes go out once the table's own loads are in flight: their
    // latency then hides behind the table's. (Issued before the build, they queued ahead
    // of its loads and made it slower.)
    u32 wa[CS_U][MW];
    if (nloc > 0) {
        const i64 q_off = ((i64)b * Hkv * G + (i64)g * G) * D;
        const i64 c_off = (cent_per_seq ? (i64)b * Hkv + g : (i64)g) * M * C * DS;
        cs_build_lut<GT, GP, M, P, DS, QT, CT, CVEC, NT>(
            lut, qs, q, q_off, cent, c_off, C, scale, prof,
            [&]() { cs_load_step<M, VEC, CS_U, NT>(crow, threadIdx.x, nloc, wa); });
        // KS softmax_sum ranks by the filter's bound v first (as the staged filtered pass):
        // the centres from the table, the histogram's memory as scratch.
        if constexpr (KS && MODE == 0)
            cs_lut_centres<GT, GP, M, P, NT>(lut, C, reinterpret_cast<float*>(hist), cen_s);
    }
    for (int i = threadIdx.x; i < 4096; i += NT) hist[i] = 0;  // (qs is dead)
    if constexpr (KS) __syncthreads();  // the loop counts into hist
    cs_mark(prof, 1);
    float mx[GT], sm[GT], cen_r[GT];
#pragma unroll
    for (int j = 0; j < GT; ++j) {
        mx[j] = -CS_FLT_MAX; sm[j] = 0.0f;
        cen_r[j] = KS && MODE == 0 && nloc > 0 ? cen_s[j] : 0.0f;
    }
    const int rot = cs_phase<GT, GP, M, P>(threadIdx.x);  // start: a multiple of 32
    int off[M];
    cs_skew_offsets<GT, GP, M, P>(rot, off);
    for (int t0 = threadIdx.x; t0 < nloc; t0 += NT * CS_U) {
        u32 wb[CS_U][MW];
        // The next step in flight while this one is scored.
        cs_load_step<M, VEC, CS_U, NT>(crow, t0 + NT * CS_U, nloc, wb);
#pragma unroll
        for (int u = 0; u < CS_U; ++u) {
            const int t = t0 + u * NT;
            if (t >= nloc) break;
            float acc[GP];
            cs_token_scores<GT, GP, M, P>(lut, wa[u], rot, off, acc);
            if constexpr (KS) {
                // Only the key stays (max, mean: of r; softmax_sum: of v), counted at once.
                float s[GT];
#pragma unroll
                for (int j = 0; j < GT; ++j) {
                    s[j] = cs_clean(acc[j]);
                    cs_stat_push(mx[j], sm[j], s[j]);
                }
                const u32 k = cs_key(cs_group_rank<GT, MODE>(s, cen_r, inv_g));
                keys[t] = k;
                if (do_sel && t >= lo && t < hi) atomicAdd(&hist[k >> 20], 1);
            } else {
                if constexpr (GP % 4 == 0) {
#pragma unroll
                    for (int v = 0; v < GP / 4; ++v)
                        reinterpret_cast<float4*>(sc + (i64)t * GP)[v] =
                            make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]);
                } else {
#pragma unroll
                    for (int j = 0; j < GP; ++j) sc[(i64)t * GP + j] = acc[j];
                }
#pragma unroll
                for (int j = 0; j < GT; ++j) cs_stat_push(mx[j], sm[j], cs_clean(acc[j]));
            }
        }
#pragma unroll
        for (int u = 0; u < CS_U; ++u)
#pragma unroll
            for (int i = 0; i < MW; ++i) wa[u][i] = wb[u][i];
    }
    cs_mark(prof, 2);
    __syncthreads();  // base_s
    const u32 seq = (u32)(base_s / ((u64)CL * CS_COOP_NB));  // this launch, for the tags
    // The row's bin list has two buffers, by the launch's parity: this launch gathers into
    // one (its entries are polled: nonzero is written) and clears the other, which the
    // previous launch filled and the next one gathers into. The stream orders launches,
    // so each buffer is all zero when its launch starts (the workspace starts zeroed).
    {
        u64* nxt = glist + ((i64)row * 2 + ((seq + 1) & 1)) * CS_COOP_GATHER_CAP;
        const int per = (CS_COOP_GATHER_CAP + CL - 1) / CL;
        const int e = min(CS_COOP_GATHER_CAP, (rank + 1) * per);
        for (int i = rank * per + threadIdx.x; i < e; i += NT)
            __stcg(reinterpret_cast<unsigned long long*>(nxt + i), 0ull);
    }
    {
        // The CTA's statistics, exported by the thread holding head j's. The per-thread
        // pairs go through the gathered list's memory (free until the gather) where it
        // holds them; else two butterflies (syncs: the table is dead).
        float m, t;
        int j = threadIdx.x;
        bool holder;
        if constexpr (!KS && GT * NT <= CS_COOP_GATHER_CAP) {  // GT * NT float2 in gl's u64s
            holder = cs_block_stats_smem<GT, NT>(mx, sm, reinterpret_cast<float2*>(gl), m, t);
            j = warp;
        } else {
            cs_block_stats<GT, NT>(mx, sm, red_m, red_s, m, t);
            holder = threadIdx.x < GT;
        }
        if (holder) {
            const u64 tg = (u64)cs_xtag(seq, 0) << 32;
            u64* xs = reinterpret_cast<u64*>(xme) + 2 * j;
            __stcg(reinterpret_cast<unsigned long long*>(xs), tg | __float_as_uint(m));
            __stcg(reinterpret_cast<unsigned long long*>(xs) + 1, tg | __float_as_uint(t));
        }
    }
    // LSE of each head from the CL statistics, polled: one warp a head, a fixed merge tree.
    auto merge_lse = [&]() {
        const u32 tg = cs_xtag(seq, 0);
        for (int j = warp; j < GT; j += NW) {
            float m = -CS_FLT_MAX, t = 0.0f;
            if (lane < CL) {
                const u64* xs = reinterpret_cast<const u64*>(xpeer(lane)) + 2 * j;
                m = cs_xfloat(xs, tg);
                t = cs_xfloat(xs + 1, tg);
            }
            cs_warp_stat_merge(m, t);
            if (lane == 0) lse_s[j] = m + logf(t);
        }
        __syncthreads();
    };
    // r and the key of every token of the chunk; level-0 counts of the candidates.
    auto rank_keys = [&]() {
        float lse_r[GT];
#pragma unroll
        for (int j = 0; j < GT; ++j) lse_r[j] = MODE == 0 ? lse_s[j] : 0.0f;
        // RU tokens' scores loaded first, then ranked: the compiler may keep each token's
        // loads behind the previous token's key store and count (one shared-memory
        // array to it), a load latency a token (not checked in the SASS).
        constexpr int RU = 2;
        for (int t0 = threadIdx.x; t0 < nloc; t0 += NT * RU) {
            float s[RU][GT];
#pragma unroll
            for (int u = 0; u < RU; ++u) {
                const int t = min(t0 + u * NT, nloc - 1);  // (a repeat load past the end)
                if constexpr (GP % 4 == 0) {
#pragma unroll
                    for (int v = 0; v < GP / 4; ++v) {
                        const float4 x = reinterpret_cast<const float4*>(sc + (i64)t * GP)[v];
                        const float xv[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
                        for (int i = 0; i < 4; ++i)
                            if (4 * v + i < GT) s[u][4 * v + i] = cs_clean(xv[i]);
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < GT; ++j) s[u][j] = cs_clean(sc[(i64)t * GP + j]);
                }
            }
#pragma unroll
            for (int u = 0; u < RU; ++u) {
                const int t = t0 + u * NT;
                if (t >= nloc) break;
                const u32 k = cs_key(cs_group_rank<GT, MODE>(s[u], lse_r, inv_g));
                keys[t] = k;
                // (Aggregating equal bins of a warp with __match_any_sync first was slower:
                // 9.2 instead of 6.3 us for 8192 tokens.)
                if (do_sel && t >= lo && t < hi) atomicAdd(&hist[k >> 20], 1);
            }
        }
        __syncthreads();
    };
    // Export this CTA's counts of a level (nb bins) and their 64-bin group sums, tagged
    // with the level's phase.
    auto export_hist = [&](int nb, int par, int phase) {
        u32* xh = xme + CS_X_HIST + par * 4096;
        u32* xg = xme + CS_X_GROUP + par * 64;
        const u32 tg = cs_xtag(seq, phase) << 16;
        // A warp's GW groups side by side: their loads, stores and sums interleaved
        // (one after another, each warp sum may wait out its five shuffles).
        constexpr int GW = 64 / NW > 0 ? 64 / NW : 1;
        for (int g0 = warp; g0 < nb / 64; g0 += NW * GW) {
            int v0[GW], v1[GW], s[GW];
#pragma unroll
            for (int u = 0; u < GW; ++u) {
                const int gi = g0 + u * NW;
                v0[u] = gi < nb / 64 ? hist[gi * 64 + lane] : 0;
                v1[u] = gi < nb / 64 ? hist[gi * 64 + 32 + lane] : 0;
            }
#pragma unroll
            for (int u = 0; u < GW; ++u) {
                const int gi = g0 + u * NW;
                if (gi < nb / 64) {
                    __stcg(xh + gi * 64 + lane, tg | (u32)v0[u]);
                    __stcg(xh + gi * 64 + 32 + lane, tg | (u32)v1[u]);
                }
                s[u] = v0[u] + v1[u];
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
#pragma unroll
                for (int u = 0; u < GW; ++u) s[u] += __shfl_xor_sync(CS_FULL, s[u], o);
            if (lane == 0) {
#pragma unroll
                for (int u = 0; u < GW; ++u)
                    if (g0 + u * NW < nb / 64) __stcg(xg + g0 + u * NW, tg | (u32)s[u]);
            }
        }
    };
    // The bin of the need-th largest key over the row, from every CTA's group sums and
    // then the chosen group's bins, polled until they carry the level's tag. Adds each
    // CTA's count above the bin to abv[r] and puts its count in the bin in inb[r].
    auto find_level = [&](int nb, int par, int phase, int need, int& bin, int& above,
                          int& cnt) {
        const int ng = nb / 64;
        const u32 tg = cs_xtag(seq, phase);
        if (threadIdx.x < 64) tot[threadIdx.x] = 0;
        __syncthreads();
        // The peers' counts, four tagged words a 16-byte load (a peer's ng and 64 words
        // are whole 16-byte lines): every load in flight before the first is used, and a
        // stale quad polled again whole, one round trip a poll.
        constexpr int XB = (CS_COOP_MAX_CL * 16 + NT - 1) / NT;
        auto gquad = [&](int i) { return xpeer(4 * i / ng) + CS_X_GROUP + par * 64 + 4 * i % ng; };
        cs_load_then_store<NT, XB, uint4>(
            CL * ng / 4, [&](int i) { return cs_ld_relaxed4(gquad(i)); },
            [&](int i, uint4 w) {
                int v[4];
                cs_xcount4(gquad(i), w, tg, v);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int x = 4 * i + e;
                    call[(x / ng) * 64 + x % ng] = v[e];
                    if (v[e]) atomicAdd(&tot[x % ng], v[e]);
                }
            });
        __syncthreads();
        if (warp == 0) cs_find64(tot, need, found);
        __syncthreads();
        const int gsel = found[0], gabove = found[1];
        if (threadIdx.x < 64) tot[threadIdx.x] = 0;
        __syncthreads();
        auto bquad = [&](int i) {
            return xpeer(i >> 4) + CS_X_HIST + par * 4096 + gsel * 64 + 4 * (i & 15);
        };
        cs_load_then_store<NT, XB, uint4>(
            CL * 16, [&](int i) { return cs_ld_relaxed4(bquad(i)); },
            [&](int i, uint4 w) {
                int v[4];
                cs_xcount4(bquad(i), w, tg, v);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    hg[4 * i + e] = v[e];
                    if (v[e]) atomicAdd(&tot[(4 * i + e) & 63], v[e]);
                }
            });
        __syncthreads();
        if (warp == 0) cs_find64(tot, need - gabove, found + 2);
        __syncthreads();
        const int jsel = found[2];
        bin = gsel * 64 + jsel;
        above = gabove + found[3];
        cnt = tot[jsel];
        // Each CTA's count above the bin and in it: one warp a CTA.
        for (int r = warp; r < CL; r += NW) {
            int a = 0;
            for (int i = lane; i < 64; i += 32)
                a += (i > gsel && i < ng ? call[r * 64 + i] : 0) + (i > jsel ? hg[r * 64 + i] : 0);
            a = cs_warp_sum(a);
            if (lane == 0) { abv[r] += a; inb[r] = hg[r * 64 + jsel]; }
        }
        __syncthreads();
    };

    constexpr int IT = 8;  // consecutive keys a thread takes in the compactions
    constexpr int LIST_CAP = 2 * CS_COOP_GATHER_CAP;  // ints of gl
    // A thread takes IT consecutive keys (the compactions keep position order with one
    // block scan) as two 16-byte loads: scalar loads at stride IT were 8-way bank
    // conflicts. Keys [tb, tb + IT) lie inside the chunk (tb and chunk are multiples of
    // IT); the caller masks those outside [lo, hi) (or at or past lim, zero here).
    auto load_keys = [&](int tb, int lim, u32 (&k)[IT]) {
        if (tb < lim) {
            const uint4 v0 = reinterpret_cast<const uint4*>(keys + tb)[0];
            const uint4 v1 = reinterpret_cast<const uint4*>(keys + tb)[1];
            k[0] = v0.x; k[1] = v0.y; k[2] = v0.z; k[3] = v0.w;
            k[4] = v1.x; k[5] = v1.y; k[6] = v1.z; k[7] = v1.w;
        } else {
#pragma unroll
            for (int i = 0; i < IT; ++i) k[i] = 0u;
        }
    };
    // KS softmax_sum, a row of one CTA (the plan's rule): the staged path's filter in
    // shared memory. The cut on v from v's level 1 (cs_filter_cut: no heavy token lies
    // below it), then the exact r of every token at or above it and of sink and window
    // (their weights), its key in place of v's; the other candidates' keys become 0,
    // below every r (r >= 0, key >= 2^31). The level-0 counts are then r's.
    auto rescore_keys = [&]() {
        u32 cut = 0u;
        if (do_sel) {
            cs_level1<NT, true>(hist, K, scratch, found);
            cut = cs_filter_cut<GT>(found[0], cen_s, lse_s);
        }
        for (int i = threadIdx.x; i < 4096; i += NT) hist[i] = 0;
        float lse_r[GT];
#pragma unroll
        for (int j = 0; j < GT; ++j) lse_r[j] = lse_s[j];
        int* lst = reinterpret_cast<int*>(gl);
        int cnt = 0;
        auto flush = [&]() {
            __syncthreads();  // the list and the cleared histogram
            cs_score_list<GT, GP, M, P, VEC, NT>(
                lut, crow, cnt, [&](int i) { return lst[i]; },
                [&](int, int t, const float (&acc)[GP]) {
                    const u32 k = cs_key(cs_prob_sum<GT, GP>(acc, lse_r));
                    keys[t] = k;
                    if (do_sel && t >= lo && t < hi) atomicAdd(&hist[k >> 20], 1);
                });
            __syncthreads();  // the list is written again
            cnt = 0;
        };
        for (int t0 = 0; t0 < nloc; t0 += NT * IT) {
            const int tb = t0 + threadIdx.x * IT;
            u32 k[IT];
            load_keys(tb, nloc, k);
            bool f[IT];
            int nf = 0;
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                const int t = tb + i;
                const bool cand = do_sel && t >= lo && t < hi;
                f[i] = t < nloc && (!cand || k[i] >= cut);
                if (t < nloc && cand && k[i] < cut) keys[t] = 0u;
                nf += f[i];
            }
            int total;
            int o = cs_block_exscan<NT>(nf, total, scratch);
            if (cnt + total > LIST_CAP) flush();  // (total <= NT * IT == LIST_CAP)
            o += cnt;
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                cs_sts_if(f[i], lst + o, tb + i);
                o += f[i];
            }
            cnt += total;
        }
        flush();
    };
    static_assert(NT * IT <= LIST_CAP, "a step's list fits gl");

    // No row barrier before the statistics or the level-0 counts: their readers poll the
    // tagged words (v29). KS max / mean counted their keys in the score loop.
    if constexpr (KS && MODE == 0) {
        merge_lse();
        rescore_keys();
        if (do_sel) export_hist(4096, 0, 1);
        cs_mark(prof, 3);
    } else if constexpr (MODE == 0) {
        merge_lse();
        rank_keys();
        if (do_sel) export_hist(4096, 0, 1);
        cs_mark(prof, 3);
    } else {
        if constexpr (!KS) rank_keys();
        if (do_sel) export_hist(4096, 0, 1);
        cs_mark(prof, 3);
        merge_lse();
    }
    cs_mark(prof, 4);

    // Weight of local token t: mean over the group's heads of p (KS max / mean keep no
    // per-head scores: weigh_list scores them again).
    auto weight = [&](int t) -> float {
        if constexpr (MODE == 0) {
            return cs_key_value(keys[t]) * inv_g;  // r = sum of p, kept exactly in the key
        } else {
            float s[GT];
#pragma unroll
            for (int j = 0; j < GT; ++j) s[j] = sc[(i64)t * GP + j];
            return cs_prob_sum<GT, GT>(s, lse_s) * inv_g;
        }
    };
    float lse_w[GT];  // KS max / mean
#pragma unroll
    for (int j = 0; j < GT; ++j) lse_w[j] = lse_s[j];
    // KS max / mean: the weights of local tokens lst[i] (lst null: a + i), i < n, to
    // out_w[dst + i], scored again.
    auto weigh_list = [&](int n, i64 dst, const int* lst, int a) {
        cs_score_list<GT, GP, M, P, VEC, NT>(
            lut, crow, n, [&](int i) { return lst ? lst[i] : a + i; },
            [&](int i, int, const float (&acc)[GP]) {
                out_w[dst + i] = cs_prob_sum<GT, GP>(acc, lse_w) * inv_g;
            });
    };
    // Local positions [a, e) out to [dst, ...).
    auto fixed = [&](int a, int e, i64 dst) {
        for (int t = a + threadIdx.x; t < e; t += NT) {
            out_idx[dst + t - a] = start + t;
            if constexpr (!KS || MODE == 0) out_w[dst + t - a] = weight(t);
        }
        if constexpr (KS && MODE != 0) weigh_list(e - a, dst, nullptr, a);
    };
    // Fixed positions: sink and window (or every position of a short row); only the
    // local parts of those ranges are walked.
    {
        const bool all = (i64)L <= (i64)KT;
        fixed(0, all ? nloc : min(nloc, S - start), obase + start);  // sink (or all): dst = n
        if (!all) {
            const int a = max(0, L - W - start);
            fixed(a, nloc, obase + S + K + (start + a - (L - W)));
        }
    }
    if (rank == 0) {
        for (int j = ((i64)L <= (i64)KT ? L : KT) + threadIdx.x; j < KT; j += NT) {
            out_idx[obase + j] = -1;
            out_w[obase + j] = 0.0f;
        }
        if (threadIdx.x == 0) out_cnt[row] = (i64)L <= (i64)KT ? L : KT;
    }
    if (!do_sel) {
        pad_barriers();
        return;
    }

    // ---------------- top-K: level 0 over the row ----------------
    int b1, above0, nb1;
    find_level(4096, 0, 1, K, b1, above0, nb1);
    const int need1 = K - above0;  // 1 <= need1 <= nb1
    cs_mark(prof, 5);
    u32 T;
    int pos_cut = 0x7fffffff, take_eq = 0x7fffffff, heavy_before = S;
    // !KS with at most a candidate a thread (pqcache-8k's chunks): the output below in
    // one pass (v49); glb: entries of the gathered list before this CTA's, counted there.
    const bool one_pass = !KS && hi - lo <= NT;
    int glb = 0;
    // Whether a gathered entry (key << 32 | position) passes the threshold, branch-free.
    auto gl_heavy = [&](u64 e) -> int {
        const u32 k = (u32)(e >> 32);
        return (k > T) | ((k == T) & ((int)(u32)e <= pos_cut));
    };
    if (nb1 <= CS_COOP_GATHER_CAP) {
        // The K-th key's bin is small (the usual case): gather it, in position order,
        // into every CTA and finish the threshold alone.
        if (warp == 0) {  // each CTA's offset in the list: a warp scan (CL <= 32)
            const int v = lane < CL ? inb[lane] : 0;
            const int x = cs_warp_inscan(v);
            if (lane < CL) goff[lane] = x - v;
            if (lane == CL - 1) goff[CL] = x;
        }
        __syncthreads();
        int run = goff[rank];
        u64* grow = glist + ((i64)row * 2 + (seq & 1)) * CS_COOP_GATHER_CAP;
        for (int t0 = lo & -IT; t0 < hi; t0 += NT * IT) {
            const int tb = t0 + threadIdx.x * IT;
            u32 k[IT];
            load_keys(tb, hi, k);
            bool f[IT];
            int ni = 0;
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                f[i] = (tb + i >= lo) & (tb + i < hi) & ((k[i] >> 20) == (u32)b1);
                ni += f[i];
            }
            int total;
            int o = run + cs_block_exscan<NT>(ni, total, scratch);
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                cs_st_relaxed_if(f[i], grow + o,
                                 ((u64)k[i] << 32) | (u64)(0x80000000u | (u32)(start + tb + i)));
                o += f[i];
            }
            run += total;
        }
        // No barrier: every entry of the list is polled until it is written (its flag,
        // bit 31 of the position, is set), all loads in flight first.
        cs_load_then_store<NT, (CS_COOP_GATHER_CAP + NT - 1) / NT, u64>(
            nb1, [&](int i) { return cs_ld_relaxed(grow + i); },
            [&](int i, u64 e) {
                while (!(e & 0x80000000ull)) e = cs_ld_relaxed(grow + i);
                gl[i] = e & ~0x80000000ull;
            });
        __syncthreads();
        cs_mark(prof, 6);
        cs_finish<NT>([&](int i) -> u64 { return gl[i]; }, nb1, (u32)b1, need1, hist, tot,
                      scratch, found, T, pos_cut);
        // Heavy tokens before this CTA: those above the bin in lower ranks, plus the
        // bin's keys of lower ranks that pass the threshold (gl[0, goff[rank])), which
        // the one-candidate-a-thread output counts before its one barrier.
        int a = lane < rank ? abv[lane] : 0;  // the CTAs before this one (rank < 32)
        heavy_before += cs_warp_sum(a);
        if (one_pass) {
            glb = goff[rank];
        } else {
            if (threadIdx.x == 0) found[5] = 0;
            __syncthreads();
            int c = 0;
            for (int i = threadIdx.x; i < goff[rank]; i += NT) c += gl_heavy(gl[i]);
            if (c) atomicAdd(&found[5], c);
            __syncthreads();
            heavy_before += found[5];
        }
    } else {
        // A crowded bin (ties, or keys packed in few values): two more levels across
        // the row give the K-th key T and each CTA's counts above and equal to it.
        for (int i = threadIdx.x; i < 4096; i += NT) hist[i] = 0;
        __syncthreads();
        for (int t = lo + threadIdx.x; t < hi; t += NT) {
            const u32 k = keys[t];
            if ((k >> 20) == (u32)b1) atomicAdd(&hist[(k >> 8) & 4095], 1);
        }
        __syncthreads();
        export_hist(4096, 1, 2);
        barrier();  // B3: every CTA has read level 0 before level 2 rewrites its words
        int b2, above1, n2;
        find_level(4096, 1, 2, need1, b2, above1, n2);
        const u32 prefix = ((u32)b1 << 12) | (u32)b2;
        const int need2 = need1 - above1;
        for (int i = threadIdx.x; i < 256; i += NT) hist[i] = 0;
        __syncthreads();
        for (int t = lo + threadIdx.x; t < hi; t += NT) {
            const u32 k = keys[t];
            if ((k >> 8) == prefix) atomicAdd(&hist[k & 255], 1);
        }
        __syncthreads();
        export_hist(256, 0, 3);
        barrier();  // B4: level-2 counts
        int b3, above2, n3;
        find_level(256, 0, 3, need2, b3, above2, n3);
        T = (prefix << 8) | (u32)b3;
        const int need3 = need2 - above2;  // keys equal to T to take, in position order
        int eq_before = 0;
        for (int r = 0; r < rank; ++r) {
            heavy_before += abv[r] + max(0, min(inb[r], need3 - eq_before));
            eq_before += inb[r];
        }
        take_eq = max(0, min(inb[rank], need3 - eq_before));
        cs_mark(prof, 6);
    }
    pad_barriers();
    cs_mark(prof, 7);

    // ---------------- index: merge-free heavy output ----------------
    if (one_pass) {
        // A candidate a thread (warp w: [lo + 32 w, lo + 32 w + 32)), flagged by ballots;
        // one block barrier gives each warp the counts of the warps before it and the
        // gathered list's heavy entries of lower ranks. A key equal to T is heavy iff its
        // position <= pos_cut and fewer than take_eq such keys come before it in the CTA
        // (one of the two limits is INT_MAX). No staging, no block scan (v49).
        const int t = lo + threadIdx.x;
        const bool in = t < hi;
        const u32 k = in ? keys[t] : 0u;
        const bool gt = in & (k > T), eq = in & (k == T) & (start + t <= pos_cut);
        const u32 gm = __ballot_sync(CS_FULL, gt), em = __ballot_sync(CS_FULL, eq);
        int cg = 0;
        for (int i = threadIdx.x; i < glb; i += NT) cg += gl_heavy(gl[i]);
        cg = cs_warp_sum(cg);
        static_assert(2 * NW <= 40, "two counts a warp in scratch");
        if (lane == 0) {
            scratch[warp] = __popc(gm) | (__popc(em) << 16);
            scratch[NW + warp] = cg;
        }
        __syncthreads();
        const u32 pb = cs_warp_sum(lane < warp ? (u32)scratch[lane] : 0u);
        heavy_before += cs_warp_sum(lane < NW ? scratch[NW + lane] : 0);
        const int erun = (int)(pb >> 16);  // equal keys at or before pos_cut, lower warps
        const u32 lt = (1u << lane) - 1u;
        const bool f = gt | (eq & (erun + __popc(em & lt) < take_eq));
        const u32 fm = __ballot_sync(CS_FULL, f);
        const i64 o = obase + heavy_before + (int)(pb & 0xffffu) + min(erun, take_eq) +
                      __popc(fm & lt);
        cs_st_if(f, out_idx + o, start + t);
        if constexpr (MODE == 0) {
            cs_st_if(f, out_w + o, cs_key_value(k) * inv_g);
        } else {
            if (f) out_w[o] = weight(t);
        }
        cs_mark(prof, 8);
        return;
    }
    // A step's heavy tokens go (local index, in position order) to obuf, then out in
    // one coalesced pass that computes each one's weight once, with no per-element
    // branch (see cs_st_if).
    int* obuf = hist;  // 4096 ints, free once the threshold is known
    static_assert(NT * IT <= 4096, "a step's heavy tokens fit obuf");
    const bool count_eq = take_eq != 0x7fffffff;  // uniform: the crowded-bin branch
    int run = heavy_before, eq_run = 0;
    // KS max / mean: the heavy tokens' weights once LIST_CAP of them are listed in gl (no
    // longer needed), all their code loads in flight at once, not a step's few at a time.
    int* pend = reinterpret_cast<int*>(gl);
    int pn = 0;  // listed, for outputs [run - pn, run)
    auto flush_weights = [&]() {
        weigh_list(pn, obase + run - pn, pend, 0);
        __syncthreads();  // pend is written again
        pn = 0;
    };
    for (int t0 = lo & -IT; t0 < hi; t0 += NT * IT) {
        const int tb = t0 + threadIdx.x * IT;
        u32 k[IT];
        load_keys(tb, hi, k);
        int ne = 0;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const int t = tb + i;
            ne += t >= lo && t < hi && k[i] == T;
        }
        int erank = eq_run, etotal = 0;
        if (count_eq) erank += cs_block_exscan<NT>(ne, etotal, scratch);
        bool f[IT];
        int nf = 0;
        if (count_eq) {  // the crowded bin's ties, taken in position order
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                const int t = tb + i;
                f[i] = false;
                if (t >= lo && t < hi) {
                    if (k[i] > T) f[i] = true;
                    else if (k[i] == T) f[i] = start + t <= pos_cut && erank++ < take_eq;
                }
                nf += f[i];
            }
        } else {
            // Branch-free (bitwise, not short-circuit): written with && and a counter,
            // every element was a branch and a reconvergence point, and ncu put ~6% of
            // pqcache-8k's stall samples on those (no instruction) (perf-notes v36).
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                const int t = tb + i;
                f[i] = (t >= lo) & (t < hi) & ((k[i] > T) | ((k[i] == T) & (start + t <= pos_cut)));
                nf += f[i];
            }
        }
        int total;
        int o = cs_block_exscan<NT>(nf, total, scratch);
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            cs_sts_if(f[i], obuf + o, tb + i);
            o += f[i];
        }
        __syncthreads();
        if (KS && MODE != 0 && pn + total > LIST_CAP) flush_weights();  // (total <= LIST_CAP)
        for (int j = threadIdx.x; j < total; j += NT) {
            const int t = obuf[j];
            out_idx[obase + run + j] = start + t;
            if constexpr (KS && MODE != 0) pend[pn + j] = t;
            else out_w[obase + run + j] = weight(t);
        }
        __syncthreads();  // obuf is written again by the next step
        run += total;
        eq_run += etotal;
        pn += total;
    }
    if constexpr (KS && MODE != 0) flush_weights();
    cs_mark(prof, 8);
}
"""
