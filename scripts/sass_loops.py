"""Instructions of the lookup loops of every Llama / Qwen kernel set, on a machine with no
GPU: NVRTC (cupy.cuda.nvrtc) compiles each set for sm_90 as CI does, cuobjdump -sass
disassembles it, and each kernel's innermost loops holding 16 or more LDS.128 are listed
as instructions / LDS.128, with the kernel's count of local loads and stores (spills).

    python scripts/sass_loops.py [TREE]          (default: this tree)

The disassembler: Debian's nvidia-cuda-toolkit 11.8 (bookworm non-free) has cuobjdump and
nvdisasm that read NVRTC 12.9's sm_90 cubins (not ptxas 13's). With non-free added to
the apt sources: `apt-get download nvidia-cuda-toolkit && dpkg -x nvidia-cuda-toolkit_*.deb
DIR`, then CUDA_BIN=DIR/usr/bin (default /tmp/x/deb/usr/bin). Counts are static: a loop
with branches (e.g. the first head tile or not) issues fewer on each path.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

tree = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
sys.path.insert(0, tree)
import kernels_cu  # noqa: E402
from cupysel.compile import compile_for_arch  # noqa: E402

BIN = os.environ.get("CUDA_BIN", "/tmp/x/deb/usr/bin")
env = dict(os.environ, PATH=BIN + os.pathsep + os.environ["PATH"])


def functions(cubin):
    """{kernel name: [(address, instruction)]} of a cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run(["cuobjdump", "-sass", f.name], capture_output=True, text=True,
                              env=env, check=True).stdout
    fn, out = None, collections.defaultdict(list)
    for ln in sass.splitlines():
        m = re.search(r"Function : (\S+)", ln)
        if m:
            fn = m.group(1)
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", ln)
        if m and fn:
            out[fn].append((int(m.group(1), 16), m.group(2).strip()))
    return out


def lookup_loops(ins):
    """(instructions, LDS.128) of each backward branch's body with 16+ LDS.128, no barrier."""
    loops = []
    for a, s in ins:
        m = re.search(r"BRA\s.*?0x([0-9a-f]+)", s)
        if not m or int(m.group(1), 16) > a:
            continue
        body = [x for b, x in ins if int(m.group(1), 16) <= b <= a]
        nl = sum("LDS.128" in x for x in body)
        if nl >= 16 and len(body) < 1500 and not any("BAR" in x for x in body):
            loops.append((len(body), nl))
    return loops


seen = set()
for ks in kernels_cu.specializations():
    if ks.q_dtype != "float16" or ks.c_dtype != "float16" or ks.subspaces != 16:
        continue
    key = (ks.mode, ks.tiles, ks.coop, ks.keys, ks.filt, ks.save, ks.minb)
    if key in seen:
        continue
    seen.add(key)
    for fn, ins in functions(compile_for_arch(ks, "sm_90")).items():
        loops = lookup_loops(ins)
        spills = sum(("LDL" in x) or ("STL" in x) for _, x in ins)
        if loops or spills:
            name = re.sub(r"_Z\d+(\w+?)I.*", r"\1", fn)
            print("%-11s G%d coop=%d keys=%d filt=%d save=%d minb=%d %-10s spills %3d loops %s" % (
                ks.mode, ks.tiles[0][1], ks.coop, ks.keys, ks.filt, ks.save, ks.minb, name,
                spills, " ".join("%d/%d" % x for x in loops)))
