import cProfile, pstats, time, sys
sys.path.insert(0, ".")
import cupy
from cupysel import bench
plan = bench.plan_for("llama-128k", "softmax_sum")
inp = bench.make_inputs("llama-128k", "float16", 0)
s = cupy.cuda.Stream(non_blocking=True)
for _ in range(5): plan(*inp, stream=s)
s.synchronize()
t=time.perf_counter()
for _ in range(200): plan(*inp, stream=s)
t1=time.perf_counter(); s.synchronize()
print("host per call us", (t1-t)/200*1e6)
pr=cProfile.Profile(); pr.enable()
for _ in range(200): plan(*inp, stream=s)
pr.disable(); s.synchronize()
pstats.Stats(pr).sort_stats("tottime").print_stats(14)
