#!/bin/bash
# The platform's web view on its own: WebKitGTK's MiniBrowser on about:blank, measured as
# `doorstep-bench app` measures the app (RSS and PSS from smaps_rollup of it and its
# children, after 10 s). Run under Xvfb:
#   xvfb-run -a -s "-screen 0 1280x1400x24" scripts/webview-baseline.sh [MiniBrowser options]
# BENCHMARKS.md ("The app", fourth round) compares it with the app after 50 records.
set -euo pipefail
browser=$(ls /usr/lib/*/webkit2gtk-4.1/MiniBrowser 2>/dev/null | head -1)
[ -n "$browser" ] || { echo "MiniBrowser not found (package libwebkit2gtk-4.1-0)" >&2; exit 1; }
"$browser" "$@" about:blank >/dev/null 2>&1 &
root=$!
trap 'kill $root 2>/dev/null || true' EXIT
sleep 10
total_rss=0
total_pss=0
tree() { echo "$1"; for child in $(pgrep -P "$1" || true); do tree "$child"; done; }
for pid in $(tree $root); do
  rss=$(awk '/^Rss:/{print $2}' /proc/$pid/smaps_rollup)
  pss=$(awk '/^Pss:/{print $2}' /proc/$pid/smaps_rollup)
  printf '%-16s RSS %4d MB  PSS %4d MB\n' "$(cat /proc/$pid/comm)" $((rss / 1024)) $((pss / 1024))
  total_rss=$((total_rss + rss))
  total_pss=$((total_pss + pss))
done
printf '%-16s RSS %4d MB  PSS %4d MB\n' "in all" $((total_rss / 1024)) $((total_pss / 1024))
