"""Max active clusters of the fused kernel (llama shapes) per cluster size and chunk."""
import sys
sys.path.insert(0, ".")
import kernels_cu as kc
from cupysel.compile import get_function
from cupysel.occupancy import max_active_clusters
for cl, chunk in [(16, 8192), (16, 4096), (16, 512), (8, 4096), (8, 1024), (4, 8192), (2, 8192), (1, 8192)]:
    ks = kc.KernelSet(16, 256, 8, "float16", "float16", "int32", "softmax_sum", True,
                      tuple(kc.head_tiles(4, 16, 256)), cvec=True, cluster=cl)
    smem = ks.fused_layout(chunk)[1]
    fn = get_function(0, ks, ks.fused(), smem)
    print("cluster", cl, "chunk", chunk, "smem", smem, "-> max active clusters",
          max_active_clusters(fn.kernel.ptr, cl, 512, smem), "regs", fn.num_regs)
