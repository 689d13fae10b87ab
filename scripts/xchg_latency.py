"""What one all-to-all exchange among the CTAs of a row costs, by mechanism (sm_90).

The cooperative kernel's chain after the scores is a run of exchanges: every CTA of a
row stores a tagged word and polls its peers' words through L2 (perf-notes v29, v39-v41:
1.3-1.5 us from a CTA's statistics stored to its row's LSE known). This measures the
bare mechanism, with no work between rounds, and the alternatives a thread block
cluster offers:
  l2      each CTA st.cg's (round << 32 | rank) to its slot in global memory; lanes < CL
          of warp 0 poll the CL slots (ld.relaxed.gpu) until every tag reaches the
          round; then a block barrier (the CTA uses what it read). The coop kernel's way.
  dsmem   the same words written by lanes < CL into every peer's shared memory
          (st.relaxed.cluster.shared::cluster), each CTA polling its own shared memory.
  cbar    one cluster barrier a round (barrier.cluster.arrive.release / wait.acquire).
Grid: ROWS x CL CTAs (8 x 16 = 128, as the B=1 Llama rows run). A round's time is the
median over CTAs of (globaltimer after the last round - before the first) / rounds.

    python3 scripts/xchg_latency.py [ROUNDS]
"""
import sys

import cupy
import numpy as np

SRC = r"""
typedef unsigned long long u64;
typedef unsigned int u32;
#define SPIN_LIMIT 20000000

__device__ __forceinline__ u64 gtime() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ u64 ld_relaxed_gpu(const u64* p) {
    u64 v;
    asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_cg(u64* p, u64 v) {
    asm volatile("st.global.cg.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ u32 cluster_rank() {
    u32 r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\t"
                 "barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// Global-memory slots, 64 u64 a row (zeroed before the launch); grid (CL, rows).
extern "C" __global__ void x_l2(u64* slots, int rounds, u64* out, int* err) {
    const int CL = gridDim.x, rank = blockIdx.x, row = blockIdx.y;
    u64* s = slots + (u64)row * 64;
    __syncthreads();
    const u64 t0 = gtime();
    for (int r = 1; r <= rounds; ++r) {
        if (threadIdx.x == 0) st_cg(s + rank, ((u64)r << 32) | (u32)rank);
        if (threadIdx.x < CL) {
            int spins = 0;
            while ((u32)(ld_relaxed_gpu(s + threadIdx.x) >> 32) < (u32)r)
                if (++spins > SPIN_LIMIT) { atomicExch(err, 1); break; }
        }
        __syncthreads();
    }
    const u64 t1 = gtime();
    if (threadIdx.x == 0) out[row * CL + rank] = t1 - t0;
}

#define X_CLUSTER(CL)                                                                     \
extern "C" __global__ void __cluster_dims__(CL, 1, 1) x_dsmem_##CL(int rounds, u64* out,  \
                                                                   int* err) {            \
    __shared__ u64 box[32];                                                               \
    if (threadIdx.x < 32) box[threadIdx.x] = 0ull;                                        \
    const u32 rank = cluster_rank();                                                      \
    u32 remote = 0;                                                                       \
    if (threadIdx.x < CL) {                                                               \
        const u32 mine = (u32)__cvta_generic_to_shared(box + rank);                       \
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"                               \
                     : "=r"(remote) : "r"(mine), "r"((u32)threadIdx.x));                  \
    }                                                                                     \
    cluster_sync();                                                                       \
    const u64 t0 = gtime();                                                               \
    for (int r = 1; r <= rounds; ++r) {                                                   \
        if (threadIdx.x < CL) {                                                           \
            asm volatile("st.relaxed.cluster.shared::cluster.u64 [%0], %1;"               \
                         ::"r"(remote), "l"(((u64)r << 32) | rank) : "memory");           \
            int spins = 0;                                                                \
            volatile u64* b = box;                                                        \
            while ((u32)(b[threadIdx.x] >> 32) < (u32)r)                                  \
                if (++spins > SPIN_LIMIT) { atomicExch(err, 1); break; }                  \
        }                                                                                 \
        __syncthreads();                                                                  \
    }                                                                                     \
    const u64 t1 = gtime();                                                               \
    cluster_sync(); /* no CTA leaves while a peer may still write into it */              \
    if (threadIdx.x == 0) out[blockIdx.y * gridDim.x + blockIdx.x] = t1 - t0;             \
}                                                                                         \
extern "C" __global__ void __cluster_dims__(CL, 1, 1) x_cbar_##CL(int rounds, u64* out,   \
                                                                  int* err) {             \
    cluster_sync();                                                                       \
    const u64 t0 = gtime();                                                               \
    for (int r = 1; r <= rounds; ++r) cluster_sync();                                     \
    const u64 t1 = gtime();                                                               \
    if (threadIdx.x == 0) out[blockIdx.y * gridDim.x + blockIdx.x] = t1 - t0;             \
}
X_CLUSTER(2)
X_CLUSTER(4)
X_CLUSTER(8)
X_CLUSTER(16)
"""

NON_PORTABLE_CLUSTER_SIZE_ALLOWED = 14  # CUfunction_attribute
NT = 256


def run(mod, name, cl, rows, rounds, slots=None):
    fn = mod.get_function(name)
    if cl > 8 and name != "x_l2":
        cupy.cuda.driver.funcSetAttribute(fn.kernel.ptr, NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1)
    out = cupy.zeros(rows * cl, dtype=cupy.uint64)
    err = cupy.zeros(1, dtype=cupy.int32)
    args = (rounds, out, err) if slots is None else (slots, rounds, out, err)
    if slots is not None:
        slots.fill(0)
    e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
    e0.record()
    fn((cl, rows), (NT,), args)
    e1.record()
    e1.synchronize()
    if int(err.get()[0]):
        return "spin limit hit"
    per = np.sort(out.get().astype(np.float64)) / rounds / 1e3  # us a round
    # The launch's time over one CTA's: ~1 where every cluster ran at once.
    conc = cupy.cuda.get_elapsed_time(e0, e1) * 1e3 / (per[-1] * rounds)
    return "median %.3f us a round (CTAs %.3f-%.3f); launch / slowest CTA %.2f" % (
        np.median(per), per[0], per[-1], conc)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    dev = cupy.cuda.Device()
    print(cupy.cuda.runtime.getDeviceProperties(dev.id)["name"].decode(), "rounds", rounds)
    mod = cupy.RawModule(code=SRC, options=("-std=c++17",))
    slots = cupy.zeros(64 * 64, dtype=cupy.uint64)
    for cl, rows in ((16, 8), (8, 16), (8, 8), (4, 8), (2, 8)):
        for kind in ("l2", "dsmem", "cbar"):
            name = "x_l2" if kind == "l2" else "x_%s_%d" % (kind, cl)
            for rep in range(2):  # the first launch loads the module
                try:
                    res = run(mod, name, cl, rows, rounds, slots if kind == "l2" else None)
                except Exception as e:  # e.g. a cluster size this GPU cannot co-schedule
                    res = "failed: %s" % (str(e).splitlines()[0][:120],)
            print("CL=%-2d rows=%-2d %-6s %s" % (cl, rows, kind, res), flush=True)


if __name__ == "__main__":
    main()
