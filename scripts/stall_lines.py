"""ncu's stall samples by CUDA source line, offline (no GPU, no nvdisasm).

Inputs: the source page of one kernel as CSV (`ncu -i REP --page source --csv
--print-source sass`, profiled with CUPYSEL_LINEINFO=1 scripts/prof_run.py) and the
cubin of the same kernel set with -lineinfo (scripts/lineinfo_cubin.py on the same
machine). The cubin's .debug_line maps each SASS offset to a line of kernels_cu.SOURCE;
the sequence whose length matches the CSV's instruction count is the kernel's. Needs
pyelftools (`pip install pyelftools`), a development tool only.

    python3 scripts/stall_lines.py SRC.csv[.gz] KERNELS.cubin [TOP]
"""
import csv
import gzip
import io
import sys
from collections import defaultdict

from elftools.common.utils import struct_parse
from elftools.dwarf.lineprogram import LineProgram
from elftools.dwarf.structs import DWARFStructs
from elftools.elf.elffile import ELFFile

sys.path.insert(0, ".")
import kernels_cu  # noqa: E402


def line_sequences(cubin):
    """[(offset, line), ...] per function, from .debug_line (DWARF 2, 32-bit)."""
    raw = ELFFile(open(cubin, "rb")).get_section_by_name(".debug_line").data()
    st = DWARFStructs(little_endian=True, dwarf_format=32, address_size=8, dwarf_version=2)
    seqs, off = [], 0
    while off < len(raw):
        stream = io.BytesIO(raw)
        hdr = struct_parse(st.Dwarf_lineprog_header, stream, off)
        end = off + hdr["unit_length"] + 4
        cur = []
        for e in LineProgram(hdr, stream, st, stream.tell(), end).get_entries():
            if e.state is not None:
                cur.append((e.state.address, e.state.line))
                if e.state.end_sequence:
                    seqs.append(sorted(cur))
                    cur = []
        off = end
    return seqs


def main():
    csv_path, cubin = sys.argv[1:3]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    rows = list(csv.reader((gzip.open if csv_path.endswith(".gz") else open)(csv_path, "rt")))
    hi = next(i for i, r in enumerate(rows) if "Address" in r and "Source" in r)
    head = rows[hi]
    data = [r for r in rows[hi + 1:] if len(r) == len(head)]
    ix = {h: i for i, h in enumerate(head)}
    n = len(data)
    seqs = line_sequences(cubin)
    lens = [q[-1][0] // 16 for q in seqs]
    best = min(range(len(seqs)), key=lambda i: abs(lens[i] - n))
    print("functions' lengths (instructions):", lens, "| the CSV's:", n)
    if lens[best] != n:
        print("warning: no function of exactly the CSV's length; the map is approximate")
    seq = seqs[best]
    line_of, j = [], 0
    for i in range(n):
        while j + 1 < len(seq) and seq[j + 1][0] <= 16 * i:
            j += 1
        line_of.append(seq[j][1])
    src = kernels_cu.SOURCE.splitlines()
    reasons = [h for h in head if h.startswith("stall_") and "(Not" not in h]
    col = ix["Warp Stall Sampling (All Samples)"]
    total = sum(int(r[col]) for r in data) or 1
    agg = defaultdict(lambda: defaultdict(int))
    for r, ln in zip(data, line_of):
        agg[ln][""] += int(r[col])
        for h in reasons:
            agg[ln][h] += int(r[ix[h]] or 0)
    print("samples:", total)
    for ln, d in sorted(agg.items(), key=lambda kv: -kv[1][""])[:top]:
        rs = sorted(((v, k[6:]) for k, v in d.items() if k and v), reverse=True)[:3]
        text = src[ln - 1].strip()[:78] if 0 < ln <= len(src) else "?"
        print("%5.1f%% L%-5d %-78s | %s" % (100.0 * d[""] / total, ln, text,
              " ".join("%s %.0f%%" % (k, 100.0 * v / d[""]) for v, k in rs)))


if __name__ == "__main__":
    main()
