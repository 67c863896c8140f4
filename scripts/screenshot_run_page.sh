#!/usr/bin/env bash
# A run's front page (outputs/<run>/html/index.html) as a headless browser renders it, saved as a PNG: what a
# reader of the exported run sees, to check by eye (the page has no layout a test can judge).
#   scripts/screenshot_run_page.sh outputs/toy_ci [out.png] [width] [height]
# Needs Chromium (Debian: apt-get install chromium). Writes <run>/html/index.png by default.
set -euo pipefail
run="${1:?usage: $0 RUN_FOLDER [OUT.png] [WIDTH] [HEIGHT]}"
page="$(cd "$run/html" 2>/dev/null && pwd)/index.html" || { echo "error: $run/html/index.html not found (run the notebooks first)" >&2; exit 2; }
[ -f "$page" ] || { echo "error: $page not found (run the notebooks first)" >&2; exit 2; }
out="${2:-$run/html/index.png}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "error: no Chromium found (Debian: apt-get install chromium)" >&2; exit 2; }
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${3:-1280},${4:-2400}" \
    --screenshot="$(realpath -m "$out")" "file://$page" 2>/dev/null
echo "wrote $out"
