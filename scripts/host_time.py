"""Host time of one source tree's calls at one shape (softmax_sum): one JSON line of
medians, us. For an A/B of two trees run it once per tree, alternating, on one machine.

    python3 scripts/host_time.py TREE SHAPE

hot_*: back-to-back calls with no sync (a sync every 64), median of 2000 wall times:
  select_s        select(..., stream=s), s a non-blocking CuPy stream not made current
  select_default  select(...) on the current (legacy default) stream
  select_in_ctx   select(...) inside `with s:`
  plan_same       plan(...) on one input set; plan_rot: four sets in turn (new pointers)
  select_rot      select(..., stream=s) on four sets in turn
cold_*: the call right after a device synchronize (as `cupysel bench` times it), median of
300: the call alone and the call plus the stream's synchronize (*_sync).
"""
import json
import os
import sys
import time

tree = os.path.abspath(sys.argv[1])
shape = sys.argv[2]
sys.path.insert(0, tree)
import numpy as np  # noqa: E402
import cupy  # noqa: E402
import cupysel  # noqa: E402
from cupysel import bench  # noqa: E402

assert os.path.dirname(os.path.abspath(cupysel.__file__)) == os.path.join(tree, "cupysel")
plan = bench.plan_for(shape, "softmax_sum")
cfg = bench.SHAPES[shape]
sets = [bench.make_inputs(shape, "float16", i) for i in range(4)]
x = sets[0]
kw = dict(sink=cfg["sink"], window=cfg["window"], k=cfg["k"])
s = cupy.cuda.Stream(non_blocking=True)
dev = cupy.cuda.Device()


def hot(f, n=2000):
    ts = []
    for i in range(n):
        t = time.perf_counter()
        f(i)
        ts.append(time.perf_counter() - t)
        if i % 64 == 63:
            dev.synchronize()
    dev.synchronize()
    return round(float(np.median(ts)) * 1e6, 2)


def cold(f, sync, n=300):
    ts, tc = [], []
    for i in range(n):
        dev.synchronize()
        t = time.perf_counter()
        f(i)
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        ts.append(t1 - t)
        tc.append(t2 - t)
    return round(float(np.median(ts)) * 1e6, 2), round(float(np.median(tc)) * 1e6, 2)


for _ in range(30):
    plan(*x, stream=s)
    cupysel.select(*x, stream=s, **kw)
    cupysel.select(*x, **kw)
dev.synchronize()
res = {"select_s": hot(lambda i: cupysel.select(*x, stream=s, **kw)),
       "select_default": hot(lambda i: cupysel.select(*x, **kw))}
with s:
    res["select_in_ctx"] = hot(lambda i: cupysel.select(*x, **kw))
res["plan_same"] = hot(lambda i: plan(*x, stream=s))
res["plan_rot"] = hot(lambda i: plan(*sets[i % 4], stream=s))
res["select_rot"] = hot(lambda i: cupysel.select(*sets[i % 4], stream=s, **kw))
null = cupy.cuda.Stream.null
res["cold_select_s"], res["cold_select_s_sync"] = cold(
    lambda i: cupysel.select(*sets[i % 4], stream=s, **kw), s.synchronize)
res["cold_select_default"], res["cold_select_default_sync"] = cold(
    lambda i: cupysel.select(*sets[i % 4], **kw), null.synchronize)
res["cold_plan_rot"], res["cold_plan_rot_sync"] = cold(
    lambda i: plan(*sets[i % 4], stream=s), s.synchronize)
g = plan.capture(*x, stream=s)
res["cold_replay"], res["cold_replay_sync"] = cold(lambda i: g.replay(s), s.synchronize)
print("RESULT", json.dumps({"tree": tree, "shape": shape, **res}), flush=True)
