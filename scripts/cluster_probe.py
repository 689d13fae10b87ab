import sys
sys.path.insert(0, ".")
import numpy as np, cupy
from cupy.cuda import driver
from cupysel.launch import Launch
src = r'''
template <int CL>
__global__ void __cluster_dims__(CL, 1, 1) k(int* out) {
    extern __shared__ int buf[];
    unsigned r; asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    if (threadIdx.x == 0) buf[0] = (int)r;
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    if (threadIdx.x == 0) out[blockIdx.y * gridDim.x + blockIdx.x] = buf[0];
}
'''
for CL in (8, 16):
    for kb in (64, 100, 150, 180, 200, 210, 220):
        try:
            mod = cupy.RawModule(code=src, options=("-std=c++17",), name_expressions=["k<%d>" % CL])
            fn = mod.get_function("k<%d>" % CL)
            fn.max_dynamic_shared_size_bytes = kb * 1024
            if CL > 8:
                driver.funcSetAttribute(fn.kernel.ptr, 14, 1)
            out = cupy.full(CL * 8, -1, np.int32)
            L = Launch(fn.kernel.ptr, (CL, 8), (512,), kb * 1024, [("p", out.data.ptr)])
            L(0); cupy.cuda.Device().synchronize()
            print("cluster", CL, kb, "KB ok")
        except Exception as e:
            print("cluster", CL, kb, "KB FAILED:", type(e).__name__, e)
