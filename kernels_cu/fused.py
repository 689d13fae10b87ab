"""Fused path: the whole selection of a row in one thread-block cluster (sm_90).

Grid (CL, B*Hkv), cluster (CL, 1, 1): CTA `rank` of the cluster of row (b, g) owns
positions [rank*chunk, (rank+1)*chunk). The three stages of the staged path run back
to back inside the cluster, with the per-head scores kept in shared memory:
  score  lookup table, scores of the chunk (kept on chip), per-head (max, sum exp);
         the CTAs read each other's statistics over DSMEM, in rank order, for LSE;
         then r, the weight mean_h p and the key of every token of the chunk.
  top-K  three radix levels (12 + 12 + 8 bits) over the keys: each CTA counts its
         chunk, CTA r sums slice r of every CTA's counts, every CTA reads the slices;
         the K-th key T and how many keys equal to T to take fall out.
  index  each CTA counts its keys above T and equal to T; from the counts of the CTAs
         before it, it knows where its heavy tokens go and how many of its ties it
         takes, and writes them in position order (a block prefix sum). Sink and
         window positions are written by the CTA that holds them.
One launch, no workspace in device memory, codes read once. Shared memory: the table
(later reused for keys and weights), chunk * GP scores, and 2 x 4096 counts.
"""

FUSED = r"""
#define CS_GATHER_CAP 1024
#if __CUDA_ARCH__ >= 900
#define CS_CLUSTER_DIMS(x) __cluster_dims__(x, 1, 1)
#else
#define CS_CLUSTER_DIMS(x)
#endif

// An empty kernel of the fused kernel's footprint (512 threads, one CTA per SM): the
// plan asks the driver how many clusters of it fit at once, for each cluster size.
template <int CL>
__global__ void __launch_bounds__(512, 1) CS_CLUSTER_DIMS(CL) cs_cluster_probe() {}

template <int GT, int GP, int M, int P, int DS, int QT, int CT, int CVEC, int LT, int MODE,
          int VEC, int CL, int NT>
__global__ void __launch_bounds__(NT, 1) CS_CLUSTER_DIMS(CL) cs_fused(
    const void* __restrict__ q, const void* __restrict__ cent, const u8* __restrict__ codes,
    const void* __restrict__ seq_lens, int* __restrict__ out_idx, float* __restrict__ out_w,
    int* __restrict__ out_cnt, int Hkv, int G, int N, int C, int S, int K, int W, float scale,
    int chunk, int region1, int cent_per_seq, long long* __restrict__ prof) {
    extern __shared__ float4 cs_smem4[];
    float* lut = reinterpret_cast<float*>(cs_smem4);  // region 1: the table, then ...
    u32* keys = reinterpret_cast<u32*>(lut);          // ... keys [chunk]
    float* wts = lut + chunk;                         // ... and weights [chunk]
    float* sc = lut + region1;                        // scores [chunk][GP]
    int* hist = reinterpret_cast<int*>(sc + (i64)chunk * GP);  // 4096 counts
    float* qs = reinterpret_cast<float*>(hist);                 // (q, during the table build)
    int* slice = hist + 4096;                                   // 4096 / CL summed counts
    u64* mylist = reinterpret_cast<u64*>(slice + 4096 / CL);    // CS_GATHER_CAP: my bin keys
    u64* gl = mylist + CS_GATHER_CAP;                           // CS_GATHER_CAP: all of them
    __shared__ float stat_m[GT], stat_s[GT], lse_s[GT];
    __shared__ float peer_m[GT][CL], peer_s[GT][CL];
    __shared__ int peer_c[2][CL];
    __shared__ int slice_tot;
    __shared__ int goff[CL + 1];
    __shared__ float red_m[GT][NT / 32], red_s[GT][NT / 32];
    __shared__ int scratch[40];
    __shared__ int found[4];
    __shared__ int my_counts[2];
    __shared__ int place[2];

    const unsigned rank = cs_cluster_rank();
    const int row = blockIdx.y, b = row / Hkv, g = row % Hkv;
    const int D = M * DS;
    const int L = cs_seq_len<LT>(seq_lens, b, N);
    const int KT = S + K + W;
    const bool do_sel = K > 0 && (i64)L > (i64)KT;
    const int start = (int)rank * chunk;
    const int nloc = max(0, min(start + chunk, L) - start);
    const i64 obase = (i64)row * KT;
    const float inv_g = 1.0f / (float)G;

    // ---------------- score ----------------
    cs_mark(prof, 0);
    if (nloc > 0) {
        const i64 q_off = ((i64)b * Hkv * G + (i64)g * G) * D;
        const i64 c_off = (cent_per_seq ? (i64)b * Hkv + g : (i64)g) * M * C * DS;
        cs_build_lut<GT, GP, M, P, DS, QT, CT, CVEC, NT>(lut, qs, q, q_off, cent, c_off, C, scale);
    }
    cs_mark(prof, 1);
    float mx[GT], sm[GT];
#pragma unroll
    for (int j = 0; j < GT; ++j) { mx[j] = -CS_FLT_MAX; sm[j] = 0.0f; }
    const u8* crow = codes + ((i64)row * N + start) * M;
    const int rot = threadIdx.x & 7;  // start is a multiple of 32: token n has n % 8 == rot
    int off[M];
    cs_skew_offsets<GP, M, P>(rot, off);
    for (int t0 = threadIdx.x; t0 < nloc; t0 += NT * CS_U) {
        u32 w[CS_U][(M + 3) / 4];
#pragma unroll
        for (int u = 0; u < CS_U; ++u) {
            const int t = t0 + u * NT;
            if (t < nloc) {
                cs_load_codes<M, VEC>(crow + (i64)t * M, w[u]);
            } else {
#pragma unroll
                for (int i = 0; i < (M + 3) / 4; ++i) w[u][i] = 0u;
            }
        }
#pragma unroll
        for (int u = 0; u < CS_U; ++u) {
            const int t = t0 + u * NT;
            if (t >= nloc) break;
            float acc[GP];
            cs_token_scores<GP, M, P>(lut, w[u], rot, off, acc);
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
    cs_mark(prof, 2);
    {
        float m, t;
        cs_block_stats<GT, NT>(mx, sm, red_m, red_s, m, t);
        if (threadIdx.x < GT) { stat_m[threadIdx.x] = m; stat_s[threadIdx.x] = t; }
    }
    cs_mark(prof, 3);
    cs_cluster_sync();  // every CTA's statistics are in place
    cs_mark(prof, 4);
    if (threadIdx.x < GT * CL) {  // one remote read per thread, all at once
        const int j = threadIdx.x / CL, r = threadIdx.x % CL;
        peer_m[j][r] = __uint_as_float(cs_peer_u32(&stat_m[j], r));
        peer_s[j][r] = __uint_as_float(cs_peer_u32(&stat_s[j], r));
    }
    for (int i = threadIdx.x; i < 4096; i += NT) hist[i] = 0;  // (qs is dead)
    __syncthreads();
    if (threadIdx.x < GT) {
        const int j = threadIdx.x;
        float m = -CS_FLT_MAX, t = 0.0f;
        for (int r = 0; r < CL; ++r) cs_stat_merge(m, t, peer_m[j][r], peer_s[j][r]);
        lse_s[j] = m + logf(t);
    }
    __syncthreads();
    cs_mark(prof, 5);
    float lse_r[GT];
#pragma unroll
    for (int j = 0; j < GT; ++j) lse_r[j] = lse_s[j];
    // r, weight and key of every token; level-1 counts of the candidates. The table is
    // dead (every CTA passed the cluster barrier after scoring), so keys and weights
    // take its place.
    const int cand_lo = S - start, cand_hi = L - W - start;  // candidate range, local
    for (int t = threadIdx.x; t < nloc; t += NT) {
        float s[GT];
        if constexpr (GP % 4 == 0) {
#pragma unroll
            for (int v = 0; v < GP / 4; ++v) {
                const float4 x = reinterpret_cast<const float4*>(sc + (i64)t * GP)[v];
                const float xv[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    if (4 * v + i < GT) s[4 * v + i] = cs_clean(xv[i]);
            }
        } else {
#pragma unroll
            for (int j = 0; j < GT; ++j) s[j] = cs_clean(sc[(i64)t * GP + j]);
        }
        float psum = 0.0f;
#pragma unroll
        for (int j = 0; j < GT; ++j) {
            const float p = __expf(s[j] - lse_r[j]);
            psum += p == p ? p : 0.0f;
        }
        float r;
        if constexpr (MODE == 0) {
            r = psum;
        } else if constexpr (MODE == 1) {
            r = s[0];
#pragma unroll
            for (int j = 1; j < GT; ++j) r = fmaxf(r, s[j]);
        } else {
            r = s[0];
#pragma unroll
            for (int j = 1; j < GT; ++j) r += s[j];
            r *= inv_g;
        }
        const u32 k = cs_key(r);
        keys[t] = k;
        wts[t] = psum * inv_g;
        if (do_sel && t >= cand_lo && t < cand_hi) atomicAdd(&hist[k >> 20], 1);
    }
    __syncthreads();
    cs_mark(prof, 6);

    // Fixed positions: sink and window (or every position of a short row).
    for (int t = threadIdx.x; t < nloc; t += NT) {
        const int n = start + t;
        int dst = -1;
        if ((i64)L <= (i64)KT) dst = n;
        else if (n < S) dst = n;
        else if (n >= L - W) dst = S + K + (n - (L - W));
        if (dst >= 0) {
            out_idx[obase + dst] = n;
            out_w[obase + dst] = wts[t];
        }
    }
    if (rank == 0) {
        for (int j = L + threadIdx.x; j < KT; j += NT) {
            out_idx[obase + j] = -1;
            out_w[obase + j] = 0.0f;
        }
        if (threadIdx.x == 0) out_cnt[row] = (i64)L <= (i64)KT ? L : KT;
    }
    if (!do_sel) {
        cs_cluster_sync();  // no CTA leaves while another may still read its statistics
        return;
    }

    // ---------------- top-K: radix levels across the cluster ----------------
    // Level l counts the keys that match the prefix found so far (level 0: every
    // candidate, counted above). Each CTA sums slice `rank` of every CTA's counts; the
    // slice holding the need-th key is found from the slice totals, then its bins.
    u32 prefix = 0;
    int need = K, bin_count = 0;
    auto radix_level = [&](int level) {
        const int nb = level < 2 ? 4096 : 256;
        const int shift = level == 0 ? 20 : (level == 1 ? 8 : 0);
        const int pbits = level == 1 ? 20 : 8;
        if (level > 0) {
            for (int i = threadIdx.x; i < 4096; i += NT) hist[i] = 0;
            __syncthreads();
            for (int t = max(cand_lo, 0) + threadIdx.x; t < min(cand_hi, nloc); t += NT) {
                const u32 k = keys[t];
                if ((k >> pbits) == prefix) atomicAdd(&hist[(k >> shift) & (nb - 1)], 1);
            }
        }
        cs_mark(prof, 7 + 4 * level);
        cs_cluster_sync();  // A: every CTA's counts of this level are complete
        cs_mark(prof, 8 + 4 * level);
        const int sl = nb / CL;
        if (threadIdx.x == 0) slice_tot = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < sl; i += NT) {
            u32 v[CL];
#pragma unroll
            for (int r = 0; r < CL; ++r) v[r] = cs_peer_u32(&hist[rank * sl + i], r);
            int sum = 0;
#pragma unroll
            for (int r = 0; r < CL; ++r) sum += (int)v[r];
            slice[i] = sum;
            if (sum) atomicAdd(&slice_tot, sum);
        }
        cs_cluster_sync();  // B: every slice is summed; nobody reads the counts again
        cs_mark(prof, 9 + 4 * level);
        if (threadIdx.x < CL) peer_c[0][threadIdx.x] = (int)cs_peer_u32(&slice_tot, threadIdx.x);
        __syncthreads();
        if (threadIdx.x == 0) {
            int above = 0, r = CL - 1;  // slices of higher ranks hold higher bins
            while (r > 0 && above + peer_c[0][r] < need) above += peer_c[0][r--];
            found[2] = r;
            found[3] = above;
        }
        __syncthreads();
        const int rsel = found[2], above_s = found[3];
        for (int i = threadIdx.x; i < sl; i += NT) hist[i] = (int)cs_peer_u32(&slice[i], rsel);
        __syncthreads();
        cs_find_bin<NT>(hist, sl, need - above_s, scratch, found);
        prefix = (prefix << (level < 2 ? 12 : 8)) | (u32)(rsel * sl + found[0]);
        need -= above_s + found[1];
        bin_count = hist[found[0]];
        __syncthreads();
        cs_mark(prof, 10 + 4 * level);
    };
    radix_level(0);
    const int lo = max(cand_lo, 0), hi = min(cand_hi, nloc);
    constexpr int IT = 16;  // a chunk of up to NT * 16 tokens in one tile

    if (bin_count <= CS_GATHER_CAP) {
        // Few keys in the K-th key's bin (the usual case): every CTA gathers the whole
        // bin (key, position), in position order, and finishes the selection alone.
        const u32 b1 = prefix;
        const int need1 = need;
        if (threadIdx.x < 2) my_counts[threadIdx.x] = 0;
        __syncthreads();
        {
            bool inb[IT];
            int ni = 0, na = 0;
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                const int t = lo + threadIdx.x * IT + i;
                const u32 bin = t < hi ? keys[t] >> 20 : 0u;
                inb[i] = t < hi && bin == b1;
                ni += inb[i];
                na += t < hi && bin > b1;
            }
            int total;
            int o = cs_block_exscan<NT>(ni, total, scratch);
#pragma unroll
            for (int i = 0; i < IT; ++i) {
                if (inb[i]) {
                    const int t = lo + threadIdx.x * IT + i;
                    mylist[o++] = ((u64)keys[t] << 32) | (u64)(u32)(start + t);
                }
            }
            if (na) atomicAdd(&my_counts[0], na);
            if (threadIdx.x == 0) my_counts[1] = total;
        }
        cs_cluster_sync();  // E: every CTA's list and counts are in place
        if (threadIdx.x < 2 * CL) {
            const int r = threadIdx.x % CL, w = threadIdx.x / CL;
            peer_c[w][r] = (int)cs_peer_u32(&my_counts[w], r);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int o = 0, ab = 0;
            for (int r = 0; r < CL; ++r) {
                goff[r] = o;
                o += peer_c[1][r];
                if (r < (int)rank) ab += peer_c[0][r];
            }
            goff[CL] = o;
            found[3] = ab;
        }
        __syncthreads();
        const int nb1 = goff[CL];
        for (int i = threadIdx.x; i < nb1; i += NT) {
            int r = 0;
            while (goff[r + 1] <= i) ++r;
            const u32* src = reinterpret_cast<const u32*>(mylist + (i - goff[r]));
            const u32 plo = cs_peer_u32(src, r), phi = cs_peer_u32(src + 1, r);
            gl[i] = ((u64)phi << 32) | plo;
        }
        cs_cluster_sync();  // F: every gather is done; nothing is read remotely after
        cs_mark(prof, 19);
        u32 T;
        int pos_cut;
        cs_finish<NT>([&](int i) -> u64 { return gl[i]; }, nb1, b1, need1, hist, scratch, found,
                      T, pos_cut);
        // Heavy tokens before this CTA: all above the bin in lower ranks, plus the bin's
        // keys of lower ranks that pass the threshold.
        if (threadIdx.x == 0) my_counts[0] = 0;
        __syncthreads();
        {
            int c = 0;
            for (int i = threadIdx.x; i < goff[rank]; i += NT) {
                const u32 k = (u32)(gl[i] >> 32);
                c += k > T || (k == T && (int)(u32)gl[i] <= pos_cut);
            }
            if (c) atomicAdd(&my_counts[0], c);
        }
        __syncthreads();
        int o = S + found[3] + my_counts[0];
        u32 k[IT];
        bool f[IT];
        int nf = 0;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const int t = lo + threadIdx.x * IT + i;
            k[i] = t < hi ? keys[t] : 0u;
            f[i] = t < hi && (k[i] > T || (k[i] == T && start + t <= pos_cut));
            nf += f[i];
        }
        int total;
        o += cs_block_exscan<NT>(nf, total, scratch);
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            if (f[i]) {
                const int t = lo + threadIdx.x * IT + i;
                out_idx[obase + o] = start + t;
                out_w[obase + o] = wts[t];
                ++o;
            }
        }
        cs_mark(prof, 21);
        return;
    }
    radix_level(1);
    radix_level(2);
    const u32 T = prefix;  // the K-th largest key; `need` of the keys equal to it are taken

    // ---------------- index: merge-free heavy output ----------------
    if (threadIdx.x < 2) my_counts[threadIdx.x] = 0;
    __syncthreads();
    {
        int gt = 0, eq = 0;
        for (int t = max(cand_lo, 0) + threadIdx.x; t < min(cand_hi, nloc); t += NT) {
            gt += keys[t] > T;
            eq += keys[t] == T;
        }
        if (gt) atomicAdd(&my_counts[0], gt);
        if (eq) atomicAdd(&my_counts[1], eq);
    }
    cs_cluster_sync();  // C: every CTA's (above, tied) counts are in place
    cs_mark(prof, 19);
    if (threadIdx.x < 2 * CL) {
        const int r = threadIdx.x % CL, w = threadIdx.x / CL;
        peer_c[w][r] = (int)cs_peer_u32(&my_counts[w], r);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int heavy_before = 0, eq_before = 0;
        for (int r = 0; r < (int)rank; ++r) {
            const int gr = peer_c[0][r], er = peer_c[1][r];
            heavy_before += gr + max(0, min(er, need - eq_before));
            eq_before += er;
        }
        place[0] = S + heavy_before;
        place[1] = max(0, min(my_counts[1], need - eq_before));  // ties this CTA takes
    }
    cs_cluster_sync();  // D: every peer has read my counts; nothing is read remotely after
    cs_mark(prof, 20);
    int run = place[0], eq_run = 0;
    const int take_eq = place[1];
    for (int t0 = lo; t0 < hi; t0 += NT * IT) {
        u32 k[IT];
        int ne = 0;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const int t = t0 + threadIdx.x * IT + i;
            k[i] = t < hi ? keys[t] : 0u;
            ne += t < hi && k[i] == T;
        }
        int etotal;
        int erank = eq_run + cs_block_exscan<NT>(ne, etotal, scratch);
        bool f[IT];
        int nf = 0;
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            const int t = t0 + threadIdx.x * IT + i;
            f[i] = false;
            if (t < hi) {
                if (k[i] > T) f[i] = true;
                else if (k[i] == T) f[i] = erank++ < take_eq;
            }
            nf += f[i];
        }
        int total;
        int o = run + cs_block_exscan<NT>(nf, total, scratch);
#pragma unroll
        for (int i = 0; i < IT; ++i) {
            if (f[i]) {
                const int t = t0 + threadIdx.x * IT + i;
                out_idx[obase + o] = start + t;
                out_w[obase + o] = wts[t];
                ++o;
            }
        }
        run += total;
        eq_run += etotal;
    }
    cs_mark(prof, 21);
}
"""
