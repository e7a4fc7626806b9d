#!/usr/bin/env bash
# Looks at report.html in a real browser: headless Chromium (Debian's `chromium`, installed with
# apt when missing) loads the page, a copy of it with a checking script appended says how many
# images loaded and how many are broken, and a screenshot of the whole page goes under target/;
# the screenshot must not be blank (enough distinct colours, not one colour nearly everywhere).
#
#   bash scripts/report-in-browser.sh              # a small Fashion-MNIST store and its report
#   bash scripts/report-in-browser.sh REPORT_DIR   # a report already written (ipirm report --out)
#
# Without REPORT_DIR it makes two small runs in target/report-in-browser/store (IP-IRM on 512
# images, one with the kNN monitor; cache hits when there) and writes their report to
# target/report-in-browser/report. Screenshots: target/report-in-browser/{top,page}.png (the
# first screen, and the whole page up to 16,000 pixels). Exits 1 naming what failed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$IPIRM_ROOT"
work="$IPIRM_ROOT/target/report-in-browser"
mkdir -p "$work"
step() { printf '== %s\n' "$*" >&2; }
fail() { echo "report-in-browser: $*" >&2; exit 1; }

if ! command -v chromium >/dev/null; then
  step "installing Debian's chromium"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ $# -ge 1 ]; then
  report="$(realpath "$1")"
else
  [ -x target/release/ipirm ] || cargo build --release --quiet --bins
  store="$work/store"
  report="$work/report"
  common=(--device cpu --store "$store" --preset fmnist-ipirm-quick
    --set data.train_limit=512 --set data.bank_limit=500 --set data.test_limit=200
    --set model.width=8 --set ipirm.maximize_iter=1 --set maximize.max_epoch=5
    --set knn.k=20 --set linear.epochs=1)
  step "two small runs in $store"
  target/release/ipirm run "${common[@]}" --out "$work/runs/quick" --set train.epochs=2 >/dev/null 2>&1 \
    || fail "the first run failed: target/release/ipirm run ${common[*]} --set train.epochs=2"
  target/release/ipirm run "${common[@]}" --out "$work/runs/monitored" --name monitored \
    --set train.epochs=3 --set train.knn_every=1 >/dev/null 2>&1 \
    || fail "the second run failed"
  rm -rf "$report"
  target/release/ipirm report --store "$store" --out "$report" >/dev/null
fi
page="$report/report.html"
[ -f "$page" ] || fail "no $page"

# Chromium's own sandbox needs user namespaces, which containers and root often lack.
browser=(chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
  --disable-extensions --disable-background-networking --mute-audio
  --virtual-time-budget=10000)

# The checking copy: after the load event, every <img> must have decoded (a broken data: URI
# has naturalWidth 0); the result is appended to the document, which --dump-dom prints.
check="$work/check.html"
cp "$page" "$check"
cat >>"$check" <<'EOF'
<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter((i) => !(i.complete && i.naturalWidth > 0)).length;
  const svgs = document.querySelectorAll("svg").length;
  const out = document.createElement("pre");
  out.id = "ipirm-check";
  out.textContent = `CHECK images=${images.length} broken=${broken} svgs=${svgs} height=${document.documentElement.scrollHeight}`;
  document.body.appendChild(out);
});
</script>
EOF
step "loading $page in headless chromium"
start=$SECONDS
dom="$("${browser[@]}" --dump-dom "file://$check" 2>"$work/chromium.log")" \
  || fail "chromium failed (log: $work/chromium.log)"
line="$(grep -o 'CHECK [^<]*' <<<"$dom" | tail -1)"
[ -n "$line" ] || fail "the page did not finish loading (no check line; log: $work/chromium.log)"
echo "$line" >&2
read -r images broken svgs height < <(sed -E 's/CHECK images=([0-9]+) broken=([0-9]+) svgs=([0-9]+) height=([0-9]+)/\1 \2 \3 \4/' <<<"$line")
[ "$broken" -eq 0 ] || fail "$broken of $images images did not load"
[ "$svgs" -gt 0 ] || fail "no inline chart in the page"

# Screenshots: the first screen, and the whole page (capped: Chromium's limit is 16,384).
rm -f "$work/top.png" "$work/page.png"
"${browser[@]}" --window-size=1280,900 --screenshot="$work/top.png" "file://$page" 2>>"$work/chromium.log" \
  || fail "the screenshot failed (log: $work/chromium.log)"
tall=$(( height < 16000 ? height : 16000 ))
"${browser[@]}" --window-size=1280,"$tall" --screenshot="$work/page.png" "file://$page" 2>>"$work/chromium.log" \
  || fail "the screenshot failed (log: $work/chromium.log)"

# Not blank: many colours (text, charts, images), and no one colour on nearly every pixel.
"$IPIRM_PY" - "$work/top.png" "$work/page.png" <<'EOF' || fail "a screenshot looks blank"
import sys
import numpy as np
from PIL import Image
ok = True
for path in sys.argv[1:]:
    px = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(px, axis=0, return_counts=True)
    top = counts.max() / len(px)
    print(f"{path}: {Image.open(path).size[0]}x{Image.open(path).size[1]}, {len(colours)} colours, the commonest on {100 * top:.1f} % of pixels", file=sys.stderr)
    ok &= len(colours) >= 64 and top < 0.97
sys.exit(0 if ok else 1)
EOF
echo "report-in-browser: ok in $((SECONDS - start)) s: $images images, none broken, $svgs charts; screenshots $work/top.png, $work/page.png"
