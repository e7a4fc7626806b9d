"""The reference's benchmark figures beside ipirm's, with ratios (ratio > 1: ipirm faster).

    python3 scripts/bench_table.py REF_BENCH_JSON IPIRM_BENCH_JSON

REF_BENCH_JSON: written by shared/bench/ref_bench.py; IPIRM_BENCH_JSON: by `ipirm bench --json`.
Used by scripts/bench-vs-ref.sh and scripts/gpu-check.sh.
"""
import json, sys
ref = json.load(open(sys.argv[1]))["figures"]
ours = json.load(open(sys.argv[2]))
print(f"\nipirm: {ours['settings']}")
pairs = [("minimize_img_per_s_augmented", "minimize_img_per_s_ref_loader_w4"),
         ("minimize_img_per_s_augmented", "minimize_img_per_s_ref_loader_w16")]
for name in ours["figures"]:
    pairs.append((name, name))
print(f"{'figure':<42} {'ipirm':>10} {'reference':>10} {'ratio':>7}")
seen = set()
for o, r in pairs:
    if o not in ours["figures"] or (o, r) in seen:
        continue
    seen.add((o, r))
    ov, unit = ours["figures"][o]
    rv = ref.get(r, [None])[0]
    label = o if o == r else f"{o} / {r.replace('minimize_img_per_s_', '')}"
    if rv is None:
        print(f"{label:<42} {ov:>10.4g} {'-':>10} {'':>7} {unit}")
        continue
    ratio = ov / rv if unit == "img/s" else rv / ov
    print(f"{label:<42} {ov:>10.4g} {rv:>10.4g} {ratio:>6.2f}x {unit}")
print("(ratio > 1: ipirm faster)")
