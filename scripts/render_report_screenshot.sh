#!/usr/bin/env bash
# Screenshot an lvmbench HTML report in headless Chromium, with every host name unresolvable so a
# report that needed the network would show it. Usage: scripts/render_report_screenshot.sh REPORT.html [OUT.png]
# Needs Debian's chromium: apt-get update && apt-get install -y chromium
set -euo pipefail
report=$(realpath "${1:?usage: $0 REPORT.html [OUT.png]}")
out=$(realpath -m "${2:-${report%.html}.png}")
chromium=$(command -v chromium || echo /usr/bin/chromium)
[[ -x $chromium ]] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --host-resolver-rules="MAP * ~NOTFOUND" \
  --screenshot="$out" --window-size=1400,4000 "file://$report" >/dev/null 2>&1
[[ -s $out ]] || { echo "chromium wrote no screenshot" >&2; exit 1; }
echo "screenshot: $out"
