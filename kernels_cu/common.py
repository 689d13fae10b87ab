"""Device helpers shared by every cupysel kernel.

Self-contained CUDA C: NVRTC is given no include path, so nothing here includes a
header. float16 is converted with one PTX instruction and bfloat16 by a shift, both
read as raw 16-bit words.
"""

COMMON = r"""
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define CS_NEG_INF __int_as_float(0xff800000)
#define CS_FLT_MAX 3.402823466e+38f
#define CS_FULL 0xffffffffu

// Warp-wide sum (every lane gets it; the butterfly's fixed order gives every lane the
// same bits) and inclusive prefix sum.
template <typename T>
__device__ __forceinline__ T cs_warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CS_FULL, v, o);
    return v;
}
template <typename T>
__device__ __forceinline__ T cs_warp_inscan(T v) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const T y = __shfl_up_sync(CS_FULL, v, o);
        if (lane >= o) v += y;
    }
    return v;
}

// Input element as float. DT: 0 float32, 1 float16, 2 bfloat16.
template <int DT>
__device__ __forceinline__ float cs_load(const void* base, i64 i) {
    if constexpr (DT == 0) {
        return static_cast<const float*>(base)[i];
    } else if constexpr (DT == 1) {
        u16 h = static_cast<const u16*>(base)[i];
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    } else {
        return __uint_as_float(((u32)static_cast<const u16*>(base)[i]) << 16);
    }
}

// seq_lens[b] clamped to [0, N]: a bad length never moves a read out of bounds.
// LT: 0 int32, 1 int64.
template <int LT>
__device__ __forceinline__ int cs_seq_len(const void* seq_lens, int b, int N) {
    i64 l;
    if constexpr (LT == 0) l = static_cast<const int*>(seq_lens)[b];
    else l = static_cast<const i64*>(seq_lens)[b];
    l = l < 0 ? 0 : l;
    return (int)(l > N ? (i64)N : l);
}

// Programmatic dependent launch (sm_90+). A staged kernel launched with it (Core.pdl in
// plan.py says which) may start while the kernel before it drains: every block
// triggers its dependents at once, and a dependent reads only the inputs (q,
// centroids, codes, seq_lens) and shared memory before cs_pdl_wait(), which returns
// when the kernel before it has completed and its writes are visible. Both are no-ops
// on sm_80 and for an ordinary launch.
__device__ __forceinline__ void cs_pdl_trigger() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void cs_pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// A store made only where p holds, as one predicated instruction. Written as `if (p)`,
// the compiler branches around each element's stores, and a warp whose lanes disagree
// waits for an instruction fetch where they meet again: 25-31% of the cooperative
// kernel's ncu stall samples were "no instruction", most of them at such points (after
// per-element stores, or after a warp-0 step). "memory": never moved across other
// accesses.
__device__ __forceinline__ void cs_st_if(bool p, u32* a, u32 v) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %0, 0;\n\t@q st.global.b32 [%1], %2;\n\t}"
                 :: "r"((int)p), "l"(a), "r"(v) : "memory");
}
__device__ __forceinline__ void cs_st_if(bool p, int* a, int v) {
    cs_st_if(p, reinterpret_cast<u32*>(a), (u32)v);
}
__device__ __forceinline__ void cs_st_if(bool p, float* a, float v) {
    cs_st_if(p, reinterpret_cast<u32*>(a), __float_as_uint(v));
}
// The same for an L2-only (st.global.cg) 8-byte store, and a shared-memory store.
__device__ __forceinline__ void cs_stcg_if(bool p, u64* a, u64 v) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %0, 0;\n\t@q st.global.cg.b64 [%1], %2;\n\t}"
                 :: "r"((int)p), "l"(a), "l"(v) : "memory");
}
__device__ __forceinline__ void cs_sts_if(bool p, int* a, int v) {
    asm volatile("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %0, 0;\n\t@q st.shared.b32 [%1], %2;\n\t}"
                 :: "r"((int)p), "r"((u32)__cvta_generic_to_shared(a)), "r"(v) : "memory");
}

// ld(i) for every i = threadIdx.x + u * NT < n (u < B), all issued before the first
// st(i, value): one memory latency, where a loop storing each value as it came waited
// out an L2 round trip a step (perf-notes v19).
template <int NT, int B, typename T, typename LD, typename ST>
__device__ __forceinline__ void cs_load_then_store(int n, LD ld, ST st) {
    T v[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
        const int i = u * NT + threadIdx.x;
        v[u] = i < n ? ld(i) : T{};
    }
#pragma unroll
    for (int u = 0; u < B; ++u) {
        const int i = u * NT + threadIdx.x;
        if (i < n) st(i, v[u]);
    }
}

// The SPEC ranks NaN as -inf; softmax and max treat it the same way.
__device__ __forceinline__ float cs_clean(float x) { return x != x ? CS_NEG_INF : x; }

// Order-preserving map float -> uint32 (larger float, larger key). NaN becomes -inf
// and -0 becomes +0 first, so NaN never lands above +inf and -0 ties with +0.
__device__ __forceinline__ u32 cs_key(float r) {
    u32 u = __float_as_uint(cs_clean(r));
    if (u == 0x80000000u) u = 0u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Inverse of cs_key (NaN and -0 were canonicalised before, so this is exact).
__device__ __forceinline__ float cs_key_value(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// softmax_sum's ranking score of one token: sum over the tile's heads of
// exp(s_j - LSE_j), a NaN score counting as -inf and a NaN term (inf - inf) as 0.
template <int GT, int GP>
__device__ __forceinline__ float cs_prob_sum(const float (&acc)[GP], const float (&lse)[GT]) {
    float r = 0.0f;
#pragma unroll
    for (int j = 0; j < GT; ++j) {
        const float p = __expf(cs_clean(acc[j]) - lse[j]);
        r += p == p ? p : 0.0f;
    }
    return r;
}

// A token's ranking score r from its GT cleaned per-head scores: softmax_sum, the sum of
// exp(s_j - lse_j) (with centres for lse: the filter's bound v); max; mean.
template <int GT, int MODE>
__device__ __forceinline__ float cs_group_rank(const float (&s)[GT], const float (&lse)[GT],
                                               float inv_g) {
    if constexpr (MODE == 0) {
        return cs_prob_sum<GT, GT>(s, lse);
    } else if constexpr (MODE == 1) {
        float r = s[0];
#pragma unroll
        for (int j = 1; j < GT; ++j) r = fmaxf(r, s[j]);
        return r;
    } else {
        float r = s[0];
#pragma unroll
        for (int j = 1; j < GT; ++j) r += s[j];
        return r * inv_g;
    }
}

// Online softmax statistics: running max and sum of exp(s - max). The max starts at
// -FLT_MAX (not -inf) so that an all -inf row sums to 0 instead of NaN.
__device__ __forceinline__ void cs_stat_push(float& mx, float& sm, float s) {
    if (s > mx) { sm = sm * __expf(mx - s) + 1.0f; mx = s; }
    else { sm += __expf(s - mx); }
}

__device__ __forceinline__ void cs_stat_merge(float& mx, float& sm, float omx, float osm) {
    float m = fmaxf(mx, omx);
    sm = sm * __expf(mx - m) + osm * __expf(omx - m);
    mx = m;
}
// The same over a warp (xor butterfly, fixed order: every lane gets the same bits).
__device__ __forceinline__ void cs_warp_stat_merge(float& mx, float& sm) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(CS_FULL, mx, o), os = __shfl_xor_sync(CS_FULL, sm, o);
        cs_stat_merge(mx, sm, om, os);
    }
}

// Per-head (max, sum exp) of the block, in a fixed order (xor butterfly in each warp,
// then one warp per head over the warps' partials): thread j < GT gets head j's result
// in (m, t).
template <int GT, int NT>
__device__ __forceinline__ void cs_block_stats(const float (&mx)[GT], const float (&sm)[GT],
                                               float (*red_m)[NT / 32], float (*red_s)[NT / 32],
                                               float& m, float& t) {
    constexpr int NW = NT / 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < GT; ++j) {
        float a = mx[j], b = sm[j];
        cs_warp_stat_merge(a, b);
        if (lane == 0) { red_m[j][warp] = a; red_s[j][warp] = b; }
    }
    __syncthreads();
    // Heads in parallel, one warp each (a serial merge of the warps took ~0.8 us).
    for (int j = warp; j < GT; j += NW) {
        float a = lane < NW ? red_m[j][lane] : -CS_FLT_MAX, b = lane < NW ? red_s[j][lane] : 0.0f;
        cs_warp_stat_merge(a, b);
        if (lane == 0) { red_m[j][0] = a; red_s[j][0] = b; }
    }
    __syncthreads();
    m = -CS_FLT_MAX;
    t = 0.0f;
    if (threadIdx.x < GT) {
        m = red_m[threadIdx.x][0];
        t = red_s[threadIdx.x][0];
    }
}

// The same through shared memory (scr: GT * NT float2): every thread stores its GT pairs
// once, then warp j alone merges head j's NT pairs: a lane's NT / 32 of them taken
// against the warp's max (one max butterfly), then one sum butterfly. cs_block_stats had
// every warp merge every head with exps at each of its butterfly's rounds, then a second
// butterfly a head: ~1.1-1.5 us of the cooperative chain (v32's phase marks). Lane 0 of
// warp j < GT gets head j's result in (m, t) and returns true; no barrier after it.
template <int GT, int NT>
__device__ __forceinline__ bool cs_block_stats_smem(const float (&mx)[GT], const float (&sm)[GT],
                                                    float2* scr, float& m, float& t) {
    constexpr int PER = NT / 32;
    static_assert(GT <= NT / 32, "a warp a head");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < GT; ++j) scr[j * NT + threadIdx.x] = make_float2(mx[j], sm[j]);
    __syncthreads();
    m = -CS_FLT_MAX;
    t = 0.0f;
    if (warp >= GT) return false;
    float2 v[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) v[i] = scr[warp * NT + i * 32 + lane];
    float a = v[0].x;
#pragma unroll
    for (int i = 1; i < PER; ++i) a = fmaxf(a, v[i].x);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(CS_FULL, a, o));
    float b = 0.0f;
#pragma unroll
    for (int i = 0; i < PER; ++i) b += v[i].y * __expf(v[i].x - a);
    b = cs_warp_sum(b);
    m = a;
    t = b;
    return lane == 0;
}

// Block-wide exclusive prefix sum of one value per thread (NT threads, NT % 32 == 0,
// NT <= 1024; T = int, or u64 holding several counters in bit fields). scratch holds
// >= 33 values. Every thread gets the block total.
template <int NT, typename T>
__device__ __forceinline__ T cs_block_exscan(T v, T& total, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T x = cs_warp_inscan(v);
    if (lane == 31) scratch[warp] = x;
    __syncthreads();
    if (warp == 0) {
        scratch[lane] = cs_warp_inscan(lane < NT / 32 ? scratch[lane] : T(0));
    }
    __syncthreads();
    const T before = warp ? scratch[warp - 1] : T(0);
    total = scratch[NT / 32 - 1];
    __syncthreads();
    return before + x - v;
}

// Phase timestamps for profiling (prof == nullptr in normal launches).
__device__ __forceinline__ void cs_mark(long long* prof, int phase) {
    if (prof != nullptr && threadIdx.x == 0) {
        long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        prof[((i64)blockIdx.y * gridDim.x + blockIdx.x) * 32 + phase] = t;
    }
}

// Tie cut of an exact top-K: every key equal to T is taken (INT_MAX) unless the K-th key
// is tied (need < count of keys equal to T); then the position of the need-th equal
// key in position order. `at(i)` gives (key << 32 | position) in position order.
template <int NT, typename AT>
__device__ int cs_tie_cut(AT at, int n, u32 T, int need, int count, int* scratch, int* slot) {
    if (need >= count) return 0x7fffffff;
    int run = 0;
    for (int t0 = 0; t0 < n && run < need; t0 += NT) {
        const int i = t0 + threadIdx.x;
        const u64 e = i < n ? at(i) : 0ull;
        const int f = i < n && (u32)(e >> 32) == T;
        int total;
        const int ex = cs_block_exscan<NT>(f, total, scratch);
        if (f && run + ex + 1 == need) *slot = (int)(u32)e;
        run += total;
    }
    __syncthreads();
    const int cut = *slot;
    __syncthreads();
    return cut;
}

// Warp-wide: among 64 counts v (index 63 is the top), the index holding the need-th
// element from the top: out[0] = index, out[1] = count above it. Needs
// 1 <= need <= sum(v); exactly one lane writes.
__device__ __forceinline__ void cs_find64(const int* v, int need, int* out) {
    const int lane = threadIdx.x & 31;
    const int hi = 63 - 2 * lane, lo = 62 - 2 * lane;
    const int a = v[hi], c = v[lo];
    const int incl = cs_warp_inscan(a + c);
    const int ex = incl - a - c;
    if (ex < need && need <= ex + a) { out[0] = hi; out[1] = ex; }
    else if (ex + a < need && need <= incl) { out[0] = lo; out[1] = ex + a; }
}

// Exact top-K finish. `at(i)` (i < n) gives entries (key << 32 | position) in position
// order; among those whose key has the top 12 bits b1, find the need-th largest key T
// (radix levels on bits 19..8 and 7..0 over the shared counts h (4096) and their 64-bin
// group sums tot (64), each bin found by one warp: no block scan) and the tie cut: a
// key equal to T is taken iff its position <= pos_cut (INT_MAX, or, from the warp sort
// below, the last equal key's position when every equal key is taken). found: 7 ints.
// A warp sorts the top-24-bit group when it holds at most 32 keys (see below).
template <int NT, typename AT>
__device__ void cs_finish(AT at, int n, u32 b1, int need, int* h, int* tot, int* scratch,
                          int* found, u32& T, int& pos_cut) {
    u32 prefix = b1;
    int last_count = 0;
    for (int level = 0; level < 2; ++level) {
        const int shift = level == 0 ? 8 : 0;
        const int nb = level == 0 ? 4096 : 256;
        const int pbits = level == 0 ? 20 : 8;
        for (int i = threadIdx.x; i < nb; i += NT) h[i] = 0;
        if (threadIdx.x < 64) tot[threadIdx.x] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += NT) {
            const u32 k = (u32)(at(i) >> 32);
            if ((k >> pbits) == prefix) {
                const int bin = (k >> shift) & (nb - 1);
                atomicAdd(&h[bin], 1);
                atomicAdd(&tot[bin >> 6], 1);
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) cs_find64(tot, need, found);
        __syncthreads();
        const int grp = found[0];
        if (threadIdx.x < 32) cs_find64(h + grp * 64, need - found[1], found + 2);
        __syncthreads();
        const int bin = grp * 64 + found[2];
        need -= found[1] + found[3];
        last_count = h[bin];
        prefix = (prefix << (level == 0 ? 12 : 8)) | (u32)bin;
        __syncthreads();
        if (level == 0 && last_count <= 32) {
            // At most a warp of keys share the top 24 bits (on the bench's scores almost
            // always 1-3): one warp sorts them, (key, -position) descending, and its
            // need-th entry is the answer, instead of a second radix level and a tie cut
            // (v20: -0.1 to -0.5 us a call on the cooperative shapes, -0.3 to -0.5 us in
            // the staged list finish; v22: -0.6 to -0.8 us in the max / mean top-K, once
            // that kernel's registers were capped at 40).
            u64* few = reinterpret_cast<u64*>(h);
            if (threadIdx.x == 0) found[6] = 0;
            __syncthreads();
            for (int i = threadIdx.x; i < n; i += NT) {
                const u64 e = at(i);
                if ((u32)(e >> 40) == prefix)
                    few[atomicAdd(&found[6], 1)] = (e & 0xffffffff00000000ull) | (u64)(~(u32)e);
            }
            __syncthreads();
            if (threadIdx.x < 32) {
                const int lane = threadIdx.x;
                u64 v = lane < last_count ? few[lane] : 0ull;  // a real entry is > 0
                int npow = 1;
                while (npow < last_count) npow <<= 1;
                // Bitonic network over lanes [0, npow); the last merge sorts descending.
                for (int kk = 2; kk <= npow; kk <<= 1) {
                    for (int jj = kk >> 1; jj > 0; jj >>= 1) {
                        const u64 o = __shfl_xor_sync(CS_FULL, v, jj);
                        const bool desc = (lane & kk) == 0, low = (lane & jj) == 0;
                        v = (low == desc) ? (v > o ? v : o) : (v < o ? v : o);
                    }
                }
                if (lane == need - 1) {
                    found[0] = (int)(u32)(v >> 32);
                    found[1] = (int)~(u32)v;
                }
            }
            __syncthreads();
            T = (u32)found[0];
            pos_cut = found[1];
            __syncthreads();
            return;
        }
    }
    T = prefix;
    pos_cut = cs_tie_cut<NT>(at, n, T, need, last_count, scratch, found + 4);
}

// Add a block's 4096-bin shared histogram to the row's global one (after a barrier:
// every thread's counts are in).
template <int NT>
__device__ __forceinline__ void cs_hist_flush(const int* shist, int* grow) {
    __syncthreads();
    for (int i = threadIdx.x; i < 4096; i += NT) {
        const int c = shist[i];
        if (c) atomicAdd(grow + i, c);
    }
}

// Radix level 1 of a row's 4096-bin histogram of candidate keys (more than K
// candidates): the bin b1 with above(b1) < K <= above(b1) + hist[b1], where above(b)
// counts candidates in bins > b, walked from the top. res[0..2] = (b1, above(b1),
// hist[b1]) for every thread; the histogram is cleared for the next launch. SHARED: the
// histogram is a lone block's own, in shared memory (complete after a barrier), and is
// left as it is: its owner clears it before use.
template <int NT, bool SHARED = false>
__device__ void cs_level1(int* grow, int K, int* scratch, int* res) {
    constexpr int PER = 4096 / NT;
    int loc[PER];
    int sum = 0;
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        const int* src = grow + 4095 - (threadIdx.x * PER + i);
        loc[i] = SHARED ? *src : __ldcg(src);
        sum += loc[i];
    }
    int total;
    int run = cs_block_exscan<NT>(sum, total, scratch);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
        if (run < K && run + loc[i] >= K) {
            res[0] = 4095 - (threadIdx.x * PER + i); res[1] = run; res[2] = loc[i];
        }
        run += loc[i];
    }
    __syncthreads();
    if (!SHARED)
        for (int i = threadIdx.x; i < 4096; i += NT) grow[i] = 0;
}

// Level 1 of the row's histogram, for the block that finishes the row: a lone block's
// own (solo, in shared memory: no flush was made), else the row's, which every block
// has flushed to global memory.
template <int NT>
__device__ __forceinline__ void cs_row_level1(bool solo, int* shist, int* grow, int K,
                                              int* scratch, int* res) {
    if (solo) {
        __syncthreads();  // every thread's counts in shist
        cs_level1<NT, true>(shist, K, scratch, res);
    } else {
        cs_level1<NT>(grow, K, scratch, res);
    }
}

// Acquire load and release add at GPU scope (barriers between the blocks of a row).
__device__ __forceinline__ u64 cs_ld_acquire(const u64* p) {
    u64 v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void cs_red_release(u64* p, u64 v) {
    asm volatile("red.release.gpu.global.add.u64 [%0], %1;" :: "l"(p), "l"(v) : "memory");
}

// The last block of a group to arrive returns true (threadFenceReduction pattern).
// Integer counter only: which block comes last never changes a result, because the
// last block combines everyone's partials in a fixed order. It resets the counter
// for the next launch.
// The block's writes are published by one thread's fence after the barrier, as
// cooperative groups' grid sync does (the barrier orders every thread's writes before
// it), not by a fence in every thread (v25: -0.8 to -1.2 us on the staged max rows);
// the row's data written by other blocks is read with __ldcg after the second barrier.
__device__ __forceinline__ bool cs_last_block(u32* counter, u32 nblocks, int* flag) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        u32 old = atomicAdd(counter, 1u);
        int last = old == nblocks - 1;
        if (last) {
            *counter = 0u;
            __threadfence();
        }
        *flag = last;
    }
    __syncthreads();
    return *flag != 0;
}

// One token's M codes as 32-bit words (byte m of the token in word m/4). VEC: the
// row base is aligned to the load width, so wide loads are legal.
template <int M, int VEC>
__device__ __forceinline__ void cs_load_codes(const u8* __restrict__ p, u32 (&w)[(M + 3) / 4]) {
    if constexpr (VEC && M % 16 == 0) {
#pragma unroll
        for (int i = 0; i < M / 16; ++i) {
            // Read once, so evict-first: L2 keeps the scores written beside them for
            // the next kernel (measured: batch16-32k max 113.8 -> 109.8 us).
            uint4 v = __ldcs(reinterpret_cast<const uint4*>(p) + i);
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
    } else if constexpr (VEC && M == 8) {
        uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
        w[0] = v.x; w[1] = v.y;
    } else if constexpr (VEC && M == 4) {
        w[0] = __ldg(reinterpret_cast<const u32*>(p));
    } else {
#pragma unroll
        for (int i = 0; i < (M + 3) / 4; ++i) w[i] = 0u;
#pragma unroll
        for (int i = 0; i < M; ++i) w[i >> 2] |= ((u32)__ldg(p + i)) << (8 * (i & 3));
    }
}

// One step of a score loop: the codes of tokens t0 + u * NT, u < U, of a row at crow
// (zero words from lim on). Both score kernels load step t + 1 while scoring step t.
template <int M, int VEC, int U, int NT>
__device__ __forceinline__ void cs_load_step(const u8* __restrict__ crow, int t0, int lim,
                                             u32 (&w)[U][(M + 3) / 4]) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
        const int t = t0 + u * NT;
        if (t < lim) {
            cs_load_codes<M, VEC>(crow + (i64)t * M, w[u]);
        } else {
#pragma unroll
            for (int i = 0; i < (M + 3) / 4; ++i) w[u][i] = 0u;
        }
    }
}

// Lookup table of one group's head tile in shared memory: entry (m, c, j) holds
//   dot(scale * q[h0 + j, m*DS:(m+1)*DS], cent[m, c, :])
// for c < C and j < GT; zero elsewhere, so a code >= C reads a zero entry or (C a power
// of two) wraps inside the table: never outside it.
//
// Layout. GP heads are stored per (m, c) as GP/4 float4 (or GP floats when GP < 4).
// SKEW (GP % 4 == 0, M % 8 == 0, not PLANES): float4 v of (m, c) lives at
//   ((m / 8 * V + v) * P + c) * 8 + m % 8          (V = GP / 4, in float4 units)
// so sub-space m always sits in the 16-byte bank group m % 8. Token n walks its
// sub-spaces starting at n % 8 (see cs_token_scores); the 8 threads of a quarter-warp
// hold 8 consecutive tokens, so they read 8 different bank groups: no bank conflict,
// whatever the codes. Without SKEW or PLANES: (m * P + c) * GP + j.
// PLANES (3 <= GT <= 7, GT != 4, M % 16 == 0): heads padded to a float4 would read
// GP / GT of the bytes the heads hold (Qwen's 7 heads: 8 of 7), and the score loop is
// bound by shared-memory wavefronts (perf-notes v16, v18). So heads 0-3 (GT > 4) sit in
// a float4 plane, the next two (GT % 4 >= 2) in a float2 plane, and the last (GT odd)
// in a float plane stored twice; in bytes, with m16 = m / 16 and mm = m % 16:
//   float4 plane   (m16 * P + c) * 256 + mm * 16
//   float2 plane   B2 + (m16 * P + c) * 128 + mm * 8
//   float plane    B1 + (m16 * P + c) * 128 + mm * 8 + copy * 4
// Token n walks m = (i + n % 16) % M and reads copy n / 16 % 2. A warp's 32 consecutive
// tokens then read 8 bank groups a quarter-warp (float4), 16 bank pairs a half-warp
// (float2) and 32 banks (float): GT wavefronts a warp and sub-space, the floor.
template <int GT, int GP, int M, int P>
struct CsLayout {
    static constexpr bool PLANES = GT >= 3 && GT <= 7 && GT != 4 && M % 16 == 0;
    static constexpr bool SKEW = !PLANES && GP % 4 == 0 && M % 8 == 0;
    static constexpr int V = GP / 4;
    static constexpr int A4 = GT / 4;            // PLANES: a float4 plane (heads 0-3)
    static constexpr int H2 = (GT % 4) / 2;      // PLANES: a float2 plane
    static constexpr int H1 = GT % 2;            // PLANES: a float plane, two copies
    static constexpr int B2 = A4 * M * P * 16;   // PLANES: byte offsets of the planes
    static constexpr int B1 = B2 + H2 * M * P * 8;
    static_assert(!PLANES || B1 + H1 * M * P * 8 <= M * P * GP * 4, "planes fit the table");
    __device__ static __forceinline__ int f4(int m, int c, int v) {  // float4 index
        return ((m >> 3) * V + v) * P * 8 + c * 8 + (m & 7);
    }
    // PLANES: byte offset of (m, c) in the float2 / float plane (half the float4's).
    __device__ static __forceinline__ int pl(int m, int c) {
        return ((m >> 4) * P + c) * 128 + (m & 15) * 8;
    }
};

// 8 centroid elements (16-byte aligned): raw 16-byte words, then as floats. Split in
// two so that a thread can put all its loads in flight before converting any.
template <int CT>
struct CsRaw8 { uint4 w[CT == 0 ? 2 : 1]; };

template <int CT>
__device__ __forceinline__ CsRaw8<CT> cs_cent8_load(const void* cent, i64 base) {
    CsRaw8<CT> r;
    const uint4* p = CT == 0 ? reinterpret_cast<const uint4*>(static_cast<const float*>(cent) + base)
                             : reinterpret_cast<const uint4*>(static_cast<const u16*>(cent) + base);
#pragma unroll
    for (int i = 0; i < (CT == 0 ? 2 : 1); ++i) r.w[i] = __ldg(p + i);
    return r;
}

template <int CT>
__device__ __forceinline__ void cs_cent8_unpack(const CsRaw8<CT>& r, float (&cv)[8]) {
    if constexpr (CT == 0) {
        cv[0] = __uint_as_float(r.w[0].x); cv[1] = __uint_as_float(r.w[0].y);
        cv[2] = __uint_as_float(r.w[0].z); cv[3] = __uint_as_float(r.w[0].w);
        cv[4] = __uint_as_float(r.w[1].x); cv[5] = __uint_as_float(r.w[1].y);
        cv[6] = __uint_as_float(r.w[1].z); cv[7] = __uint_as_float(r.w[1].w);
    } else {
        const u32 wv[4] = {r.w[0].x, r.w[0].y, r.w[0].z, r.w[0].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if constexpr (CT == 1) {
                float lo, hi;
                asm("cvt.f32.f16 %0, %1;" : "=f"(lo) : "h"((u16)(wv[i] & 0xffffu)));
                asm("cvt.f32.f16 %0, %1;" : "=f"(hi) : "h"((u16)(wv[i] >> 16)));
                cv[2 * i] = lo; cv[2 * i + 1] = hi;
            } else {
                cv[2 * i] = __uint_as_float(wv[i] << 16);
                cv[2 * i + 1] = __uint_as_float(wv[i] & 0xffff0000u);
            }
        }
    }
}

template <int GT, int GP, int M, int P>
__device__ __forceinline__ void cs_store_entry(float* lut, int m, int c, const float (&acc)[GP]) {
    typedef CsLayout<GT, GP, M, P> LY;
    const int e = m * P + c;
    if constexpr (LY::PLANES) {
        char* lb = reinterpret_cast<char*>(lut);
        const int u = LY::pl(m, c);
        if constexpr (LY::A4)
            *reinterpret_cast<float4*>(lb + 2 * u) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        if constexpr (LY::H2)
            *reinterpret_cast<float2*>(lb + LY::B2 + u) =
                make_float2(acc[4 * LY::A4], acc[4 * LY::A4 + 1]);
        if constexpr (LY::H1)
            *reinterpret_cast<float2*>(lb + LY::B1 + u) = make_float2(acc[GT - 1], acc[GT - 1]);
    } else if constexpr (LY::SKEW) {
        float4* l4 = reinterpret_cast<float4*>(lut);
#pragma unroll
        for (int v = 0; v < GP / 4; ++v)
            l4[LY::f4(m, c, v)] = make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]);
    } else if constexpr (GP % 4 == 0) {
#pragma unroll
        for (int v = 0; v < GP / 4; ++v)
            reinterpret_cast<float4*>(lut + (i64)e * GP)[v] =
                make_float4(acc[4 * v], acc[4 * v + 1], acc[4 * v + 2], acc[4 * v + 3]);
    } else {
#pragma unroll
        for (int j = 0; j < GP; ++j) lut[(i64)e * GP + j] = acc[j];
    }
}

struct CsNoop {
    __device__ __forceinline__ void operator()() const {}
};

// pre() runs once the build's own loads are in flight (the cooperative kernel issues its
// first codes there, so that their latency hides behind the table's instead of following
// it).
template <int GT, int GP, int M, int P, int DS, int QT, int CT, int CVEC, int NT,
          typename PRE = CsNoop>
__device__ void cs_build_lut(float* lut, float* qs, const void* q, i64 q_off,
                             const void* cent, i64 c_off, int C, float scale,
                             long long* prof = nullptr, PRE pre = PRE()) {
    constexpr int PER = (M * P + NT - 1) / NT;          // entries per thread
    constexpr int CH = DS / 8;                          // 8-element chunks per entry
    if constexpr (CVEC && DS % 8 == 0 && PER * CH * (CT == 0 ? 2 : 1) <= 8) {
        // Every load of the thread first (all in flight at once), then the arithmetic:
        // the table costs about one memory latency instead of one per entry. When a
        // thread's entries share one sub-space m and the q slice is small, that slice
        // sits in registers: no shared-memory load per multiply-add (CONTIG). Its
        // entries are spread so that a warp's loads are coalesced (with a thread's
        // entries side by side, each load touched 32 lines, and the table, larger than
        // the L1 the shared-memory carve-out leaves, came from L2 PER times over: 5 us
        // for 64 KB) and its stores conflict-free:
        //   skewed layout: lane l takes m = 8 mg + l % 8, c = cb + l / 8 + 4 k, so a
        //     quarter-warp stores 8 sub-spaces of one c, one per bank group;
        //   planes: lane l takes m = 16 mg + l % 16, c = cb + l / 16 + 2 k, so a
        //     half-warp stores 16 sub-spaces of one c (lanes walking c of one m would
        //     store to one bank), with up to 64 q values in registers (read at each use,
        //     16 sub-spaces DS floats apart conflict 4-way: ncu counted more shared
        //     wavefronts on Qwen's score kernel than its lookups saved);
        //   plain layout: lane l takes c = cb + l + 32 k of a warp-wide m.
        typedef CsLayout<GT, GP, M, P> LY;
        constexpr bool SK = LY::SKEW && P % (4 * PER) == 0;
        constexpr bool PK = LY::PLANES && P % (2 * PER) == 0;
        constexpr bool CONTIG = (SK || PK || P % (32 * PER) == 0) &&
                                (GT * DS <= 32 || (PK && GT * DS <= 64));
        constexpr bool MAP = CONTIG || PK;  // entries by (cm, cc) rather than e = t + k NT
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        int cm = 0, cc = 0;  // MAP: this thread's m, and c of its entry k = cc + k * cstep
        bool cvalid = false;
        constexpr int MLB = SK ? 3 : 4, ML = 1 << MLB;  // SK / PK: ML lanes across m
        constexpr int cstep = SK || PK ? 32 / ML : 32;
        if constexpr (SK || PK) {
            const int mg = warp / (P / (cstep * PER));
            cm = ML * mg + (lane & (ML - 1));
            cc = (warp % (P / (cstep * PER))) * cstep * PER + (lane >> MLB);
            cvalid = mg < M / ML;
        } else {
            const int e0 = warp * PER * 32;
            cm = e0 / P;
            cc = e0 % P + lane;
            cvalid = e0 < M * P;
        }
        // q first: the table waits for it, and loads issued after the centroids' queue
        // behind them (measured: +2 us before q arrived).
        float qv[(GT * M * DS + NT - 1) / NT];
#pragma unroll
        for (int u = 0; u < (GT * M * DS + NT - 1) / NT; ++u) {
            const int i = threadIdx.x + u * NT;
            qv[u] = i < GT * M * DS ? cs_load<QT>(q, q_off + i) : 0.0f;
        }
        CsRaw8<CT> raw[PER][CH];
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            int m, c;
            bool ok;
            if constexpr (MAP) {
                m = cm; c = cc + k * cstep; ok = cvalid;
            } else {
                const int e = threadIdx.x + k * NT;
                m = e / P; c = e % P; ok = e < M * P;
            }
            if (ok && c < C) {
#pragma unroll
                for (int h = 0; h < CH; ++h)
                    raw[k][h] = cs_cent8_load<CT>(cent, c_off + ((i64)m * C + c) * DS + h * 8);
            }
        }
        pre();
        cs_mark(prof, 9);
#pragma unroll
        for (int u = 0; u < (GT * M * DS + NT - 1) / NT; ++u) {
            const int i = threadIdx.x + u * NT;
            if (i < GT * M * DS) qs[i] = qv[u] * scale;
        }
        __syncthreads();
        cs_mark(prof, 10);
        if constexpr (MAP) {
            // CONTIG: the q slice of sub-space cm in registers; else (PK) read at each use.
            float qr[CONTIG ? GT : 1][CONTIG ? DS : 1];
            if constexpr (CONTIG && PK && DS % 4 == 0) {
                if (cvalid) {  // 16-byte loads: 2-way conflicts, a quarter of the wavefronts
#pragma unroll
                    for (int j = 0; j < GT; ++j)
#pragma unroll
                        for (int d = 0; d < DS; d += 4) {
                            const float4 t =
                                *reinterpret_cast<const float4*>(qs + (j * M + cm) * DS + d);
                            qr[j][d] = t.x; qr[j][d + 1] = t.y;
                            qr[j][d + 2] = t.z; qr[j][d + 3] = t.w;
                        }
                }
            } else if constexpr (CONTIG) {
                if (cvalid) {
#pragma unroll
                    for (int j = 0; j < GT; ++j)
#pragma unroll
                        for (int d = 0; d < DS; ++d) qr[j][d] = qs[(j * M + cm) * DS + d];
                }
            }
#pragma unroll
            for (int k = 0; k < PER; ++k) {
                if (cvalid) {
                    const int c = cc + k * cstep;
                    float acc[GP];
#pragma unroll
                    for (int j = 0; j < GP; ++j) acc[j] = 0.0f;
                    if (c < C) {
#pragma unroll
                        for (int h = 0; h < CH; ++h) {
                            float cv[8];
                            cs_cent8_unpack<CT>(raw[k][h], cv);
#pragma unroll
                            for (int i = 0; i < 8; ++i)
#pragma unroll
                                for (int j = 0; j < GT; ++j) {
                                    float qj;
                                    if constexpr (CONTIG) qj = qr[j][h * 8 + i];
                                    else qj = qs[(j * M + cm) * DS + h * 8 + i];
                                    acc[j] = fmaf(qj, cv[i], acc[j]);
                                }
                        }
                    }
                    cs_store_entry<GT, GP, M, P>(lut, cm, c, acc);
                }
            }
        } else {
#pragma unroll
        for (int k = 0; k < PER; ++k) {
            const int e = threadIdx.x + k * NT;
            if (e < M * P) {
                const int m = e / P, c = e % P;
                float acc[GP];
#pragma unroll
                for (int j = 0; j < GP; ++j) acc[j] = 0.0f;
                if (c < C) {
#pragma unroll
                    for (int h = 0; h < CH; ++h) {
                        float cv[8];
                        cs_cent8_unpack<CT>(raw[k][h], cv);
#pragma unroll
                        for (int i = 0; i < 8; ++i)
#pragma unroll
                            for (int j = 0; j < GT; ++j)
                                acc[j] = fmaf(qs[(j * M + m) * DS + h * 8 + i], cv[i], acc[j]);
                    }
                }
                cs_store_entry<GT, GP, M, P>(lut, m, c, acc);
            }
        }
        }
    } else {
        for (int i = threadIdx.x; i < GT * M * DS; i += NT) qs[i] = cs_load<QT>(q, q_off + i) * scale;
        pre();
        __syncthreads();
        for (int e = threadIdx.x; e < M * P; e += NT) {
            // Planes: lanes across m % 16, so that a warp's stores hit distinct banks.
            constexpr bool pl = CsLayout<GT, GP, M, P>::PLANES;
            const int m = pl ? 16 * ((e >> 4) / P) + (e & 15) : e / P;
            const int c = pl ? (e >> 4) % P : e % P;
            float acc[GP];
#pragma unroll
            for (int j = 0; j < GP; ++j) acc[j] = 0.0f;
            if (c < C) {
                const i64 base = c_off + ((i64)m * C + c) * DS;
                if constexpr (CVEC && DS % 8 == 0) {
#pragma unroll 4
                    for (int d0 = 0; d0 < DS; d0 += 8) {
                        float cv[8];
                        cs_cent8_unpack<CT>(cs_cent8_load<CT>(cent, base + d0), cv);
#pragma unroll
                        for (int i = 0; i < 8; ++i)
#pragma unroll
                            for (int j = 0; j < GT; ++j)
                                acc[j] = fmaf(qs[(j * M + m) * DS + d0 + i], cv[i], acc[j]);
                    }
                } else {
#pragma unroll 8
                    for (int d = 0; d < DS; ++d) {
                        const float c1 = cs_load<CT>(cent, base + d);
#pragma unroll
                        for (int j = 0; j < GT; ++j) acc[j] = fmaf(qs[(j * M + m) * DS + d], c1, acc[j]);
                    }
                }
            }
            cs_store_entry<GT, GP, M, P>(lut, m, c, acc);
        }
    }
    __syncthreads();
}

// Entry (m, c, j) of the lookup table in either layout (see CsLayout).
template <int GT, int GP, int M, int P>
__device__ __forceinline__ float cs_lut_entry(const float* lut, int m, int c, int j) {
    typedef CsLayout<GT, GP, M, P> LY;
    if constexpr (LY::PLANES) {
        const int u = LY::pl(m, c) / 4;  // in floats
        if (j < 4 * LY::A4) return lut[2 * u + j];
        if (j < 4 * LY::A4 + 2 * LY::H2) return lut[LY::B2 / 4 + u + j - 4 * LY::A4];
        return lut[LY::B1 / 4 + u];
    }
    if constexpr (LY::SKEW) return lut[LY::f4(m, c, j >> 2) * 4 + (j & 3)];
    else return lut[(m * P + c) * GP + j];
}

// Rotate a token's code bytes so that byte i becomes byte (i + r) % M (0 <= r < 8, or
// r < 16 with R16 and M % 16 == 0).
template <int M, bool R16 = false>
__device__ __forceinline__ void cs_rotate_codes(u32 (&w)[(M + 3) / 4], int r) {
    constexpr int MW = M / 4;
    u32 t[MW];
    const bool word = (r & 4) != 0;
#pragma unroll
    for (int i = 0; i < MW; ++i) t[i] = word ? w[(i + 1) % MW] : w[i];
    if constexpr (R16) {
        const bool two = (r & 8) != 0;
        u32 t2[MW];
#pragma unroll
        for (int i = 0; i < MW; ++i) t2[i] = two ? t[(i + 2) % MW] : t[i];
#pragma unroll
        for (int i = 0; i < MW; ++i) t[i] = t2[i];
    }
    const u32 sh = 8u * (u32)(r & 3);
#pragma unroll
    for (int i = 0; i < MW; ++i) w[i] = __funnelshift_r(t[i], t[(i + 1) % MW], sh);
}

// A token's phase, all that its walk depends on: n % 8 (SKEW), n % 32 (PLANES: the walk
// starts at n % 16, copy n / 16 % 2). Masked here so SKEW keeps one 3-bit value live.
template <int GT, int GP, int M, int P>
__device__ __forceinline__ int cs_phase(int n) {
    return n & (CsLayout<GT, GP, M, P>::PLANES ? 31 : 7);
}

// Per-thread offsets of the skewed walk of a token of phase ph = cs_phase(n): off[i] is,
// for m = (i + r) % M, the float4 index of (m, c = 0, v = 0) (SKEW, r = ph % 8) or the
// byte offset LY::pl(m, 0) (PLANES, r = ph % 16).
template <int GT, int GP, int M, int P>
__device__ __forceinline__ void cs_skew_offsets(int ph, int (&off)[M]) {
    typedef CsLayout<GT, GP, M, P> LY;
    const int r = ph & (LY::PLANES ? 15 : 7);
#pragma unroll
    for (int i = 0; i < M; ++i) {
        int m = i + r;
        if (m >= M) m -= M;
        off[i] = LY::PLANES ? LY::pl(m, 0) : LY::f4(m, 0, 0);
    }
}

// Scores of one token of phase ph = cs_phase(n) for the GT heads of the tile: acc[j] =
// sum_m lut[m, code_m, j]. With SKEW (PLANES) the sum runs over m = (r + i) % M, i =
// 0..M-1, r = n % 8 (n % 16) in every kernel that ranks, so a token's scores are the
// same bits wherever they are computed (cs_weights, which ranks nothing, walks from the
// lane's phase); off comes from cs_skew_offsets(ph). Otherwise m = 0..M-1 (ph and off
// unused).
template <int GT, int GP, int M, int P>
__device__ __forceinline__ void cs_token_scores(const float* lut, u32 (&w)[(M + 3) / 4], int ph,
                                                const int (&off)[M], float (&acc)[GP]) {
    typedef CsLayout<GT, GP, M, P> LY;
#pragma unroll
    for (int j = 0; j < GP; ++j) acc[j] = 0.0f;
    if constexpr (LY::PLANES) {
        cs_rotate_codes<M, true>(w, ph & 15);
        const char* lb = reinterpret_cast<const char*>(lut);
        const int copy4 = (ph & 16) >> 2;  // the float plane's copy: bank 2 * (m % 16) + copy
#pragma unroll
        for (int i = 0; i < M; ++i) {
            const int c = (int)((w[i >> 2] >> (8 * (i & 3))) & (u32)(P - 1));
            const int u = off[i] + c * 128;
            if constexpr (LY::A4) {
                const float4 t = *reinterpret_cast<const float4*>(lb + 2 * u);
                acc[0] += t.x; acc[1] += t.y; acc[2] += t.z; acc[3] += t.w;
            }
            if constexpr (LY::H2) {
                const float2 t = *reinterpret_cast<const float2*>(lb + LY::B2 + u);
                acc[4 * LY::A4] += t.x; acc[4 * LY::A4 + 1] += t.y;
            }
            if constexpr (LY::H1)
                acc[GT - 1] += *reinterpret_cast<const float*>(lb + LY::B1 + u + copy4);
        }
    } else if constexpr (LY::SKEW) {
        cs_rotate_codes<M>(w, ph & 7);
        const float4* l4 = reinterpret_cast<const float4*>(lut);
#pragma unroll
        for (int i = 0; i < M; ++i) {
            const int c = (int)((w[i >> 2] >> (8 * (i & 3))) & (u32)(P - 1));
#pragma unroll
            for (int v = 0; v < LY::V; ++v) {
                const float4 t = l4[off[i] + c * 8 + v * P * 8];
                acc[4 * v] += t.x; acc[4 * v + 1] += t.y; acc[4 * v + 2] += t.z; acc[4 * v + 3] += t.w;
            }
        }
    } else {
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const u32 c = (w[m >> 2] >> (8 * (m & 3))) & (u32)(P - 1);
            const float* e = lut + (m * P + c) * GP;
            if constexpr (GP % 4 == 0) {
#pragma unroll
                for (int v = 0; v < GP / 4; ++v) {
                    const float4 t = reinterpret_cast<const float4*>(e)[v];
                    acc[4 * v] += t.x; acc[4 * v + 1] += t.y; acc[4 * v + 2] += t.z; acc[4 * v + 3] += t.w;
                }
            } else if constexpr (GP == 2) {
                const float2 t = reinterpret_cast<const float2*>(e)[0];
                acc[0] += t.x; acc[1] += t.y;
            } else {
#pragma unroll
                for (int j = 0; j < GP; ++j) acc[j] += e[j];
            }
        }
    }
}
"""
