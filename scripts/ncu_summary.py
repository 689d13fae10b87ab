import csv, sys, collections
lines = open(sys.argv[1]).read().splitlines()
start = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
rows = list(csv.DictReader(lines[start:]))
want = ["Duration", "Compute (SM) Throughput", "Memory Throughput", "DRAM Throughput",
        "Achieved Occupancy", "Registers Per Thread", "Dynamic Shared Memory Per Block",
        "Grid Size", "Block Size", "Theoretical Occupancy",
        "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
        "smsp__sass_inst_executed_op_shared_ld.sum", "sm__inst_executed.sum",
        "smsp__inst_executed_op_shared_atom.sum", "L1/TEX Hit Rate", "L2 Hit Rate",
        "Warp Cycles Per Issued Instruction", "Issued Warp Per Scheduler", "No Eligible",
        "Stall Long Scoreboard", "Stall Barrier", "Stall MIO Throttle", "Stall Short Scoreboard",
        "Stall LG Throttle", "Stall Membar", "Stall Wait"]
by = collections.OrderedDict()
for r in rows:
    if not r.get("Kernel Name"):
        continue
    key = (r["ID"], r["Kernel Name"][:60])
    by.setdefault(key, {})[r["Metric Name"]] = (r["Metric Value"], r["Metric Unit"])
    if r.get("Rule Name") == "CPIStall" or "stall" in (r.get("Rule Description") or "").lower():
        by[key].setdefault("_rules", set()).add(r["Rule Description"][:200])
for (i, name), m in by.items():
    print(i, name)
    print("   " + "; ".join("%s=%s%s" % (k, m[k][0], m[k][1]) for k in want if k in m))
    for rule in sorted(m.get("_rules", ())):
        print("   rule:", rule)
