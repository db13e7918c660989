#!/usr/bin/env bash
# tests/load/run.sh [SCENARIO...] — the artillery load scenarios against chorus (README.md here).
#
# Builds chorus and starts it on a free 127.0.0.1 port with a fresh CHORUS_API_KEY, or, when
# CHORUS_URL is set, uses that server as it is (then CHORUS_API_KEY must be its key). Runs each
# scenario (default: all three) under a hard timeout, prints artillery's summary, the key
# figures and a PASS or FAIL line, and exits 1 if any scenario failed.
#
#   LOAD_TIMEOUT          seconds one scenario may take before it is killed      default 150
#   LOAD_MAX_FAILED_PCT   failures tolerated per kind, in % of attempts (check.js)  default 0.1
#   LOAD_REPORTS          where the JSON reports and logs go          default tests/artifacts/load
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(connect-publish http-fanout reconnect-storm)
for s in "${scenarios[@]}"; do
	[ -f "$here/$s.yml" ] || { echo "run.sh: no scenario $here/$s.yml" >&2; exit 2; }
done
timeout_s=${LOAD_TIMEOUT:-150}
reports=${LOAD_REPORTS:-$root/tests/artifacts/load}
mkdir -p "$reports"

# Nothing is downloaded besides the npm packages, and nothing is reported anywhere.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 \
	ARTILLERY_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 \
	npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

started=$SECONDS

# Dependencies: tests/load has its own lockfile, apart from the root package.
if [ ! -x "$here/node_modules/.bin/artillery" ] ||
	[ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
	echo "== npm ci in tests/load"
	(cd "$here" && npm ci --no-audit --no-fund)
fi
artillery=$here/node_modules/.bin/artillery

chorus_pid=
cleanup() {
	if [ -n "$chorus_pid" ] && kill -0 "$chorus_pid" 2>/dev/null; then
		kill "$chorus_pid" 2>/dev/null || true
		# chorus drains for up to its drain timeout (10 s by default); then it is killed.
		for _ in $(seq 150); do
			kill -0 "$chorus_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$chorus_pid" 2>/dev/null || true
		wait "$chorus_pid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

healthy() { curl -fsS -o /dev/null --max-time 2 "$1/healthz"; }

if [ -n "${CHORUS_URL:-}" ]; then
	url=${CHORUS_URL%/}
	echo "== against $url (CHORUS_URL)"
	healthy "$url" || { echo "FAIL: $url/healthz does not answer 200" >&2; exit 1; }
	[ -n "${CHORUS_API_KEY:-}" ] || echo "warning: CHORUS_API_KEY is empty; http-fanout's emits will get 401" >&2
else
	echo "== go build -o ./chorus ."
	(cd "$root" && ${GO:-go} build -o ./chorus .)
	CHORUS_API_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	export CHORUS_API_KEY
	chorus_log=$reports/chorus.log
	: >"$chorus_log"
	# A free port can be taken between the probe and the listen: try a few.
	for attempt in 1 2 3; do
		port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
		url=http://127.0.0.1:$port
		# The load comes from one address: the per-address connection limits are off.
		(cd "$root" && exec ./chorus -addr "127.0.0.1:$port" -log-level warn \
			-max-conns-per-ip 0 -handshake-rate 0 -max-conns 0) >>"$chorus_log" 2>&1 &
		chorus_pid=$!
		for _ in $(seq 100); do
			healthy "$url" 2>/dev/null && break
			kill -0 "$chorus_pid" 2>/dev/null || break
			sleep 0.1
		done
		healthy "$url" 2>/dev/null && break
		echo "chorus did not come up on $url (attempt $attempt):" >&2
		tail -5 "$chorus_log" >&2
		cleanup
		chorus_pid=
	done
	[ -n "$chorus_pid" ] || { echo "FAIL: could not start chorus" >&2; exit 1; }
	echo "== chorus (pid $chorus_pid) on $url, log: $chorus_log"
fi

# cpu_ticks PID: user+system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

results=()
for s in "${scenarios[@]}"; do
	echo
	echo "=================================================================================="
	echo "== $s"
	echo "=================================================================================="
	log=$reports/$s.log
	json=$reports/$s.json
	rm -f "$json"
	[ -z "$chorus_pid" ] || ticks0=$(cpu_ticks "$chorus_pid")
	t0=$SECONDS
	rc=0
	# no-telemetry.cjs: artillery 2.0.21 would otherwise still post an event to PostHog.
	(cd "$here" && NODE_OPTIONS="--require $here/no-telemetry.cjs" \
		timeout --kill-after=10 "$timeout_s" "$artillery" run --target "$url" --output "$json" "$s.yml") \
		>"$log" 2>&1 || rc=$?
	took=$((SECONDS - t0))
	# artillery's own summary: from its "Summary report" banner to the end.
	sed -n '/^Summary report/,$p' "$log" | sed '/^Log file:/d'
	echo "-- $s: ${took}s (artillery log: $log)"
	if [ -n "$chorus_pid" ]; then
		if kill -0 "$chorus_pid" 2>/dev/null; then
			cpu=$(awk -v a="$ticks0" -v b="$(cpu_ticks "$chorus_pid")" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }')
			echo "  chorus       ${cpu} s CPU during the scenario, RSS $(($(rss_kb "$chorus_pid" VmRSS) / 1024)) MB now, $(($(rss_kb "$chorus_pid" VmHWM) / 1024)) MB peak"
		else
			echo "  chorus       EXITED during the scenario; log tail:"
			tail -20 "$chorus_log" | sed 's/^/    /'
		fi
	fi
	verdict=
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		verdict="FAIL $s: artillery did not finish within ${timeout_s}s"
		tail -5 "$log" | sed 's/^/    /'
	elif [ "$rc" -ne 0 ]; then
		verdict="FAIL $s: artillery exited $rc"
		tail -20 "$log" | sed 's/^/    /'
	elif [ ! -s "$json" ]; then
		verdict="FAIL $s: artillery wrote no report"
	else
		node "$here/check.js" "$s" "$json" >"$reports/$s.check" 2>&1 || true
		sed '$d' "$reports/$s.check"
		verdict=$(tail -1 "$reports/$s.check")
		case $verdict in PASS* | FAIL*) ;; *) verdict="FAIL $s: check.js failed: $verdict" ;; esac
	fi
	if ! healthy "$url" 2>/dev/null; then
		case $verdict in
		PASS*) verdict="FAIL $s: the server no longer answers /healthz" ;;
		*) verdict="FAIL $s: the server no longer answers /healthz; ${verdict#* "$s": }" ;;
		esac
	fi
	echo "$verdict"
	results+=("$verdict")
done

if [ -n "$chorus_pid" ]; then
	warnings=$(grep -c . "$chorus_log" || true)
	echo
	echo "== chorus logged $warnings lines at warn or error ($chorus_log)"
	[ "$warnings" -eq 0 ] || head -10 "$chorus_log" | sed 's/^/    /'
fi

echo
echo "== load: $((SECONDS - started))s in all"
failed=0
for r in "${results[@]}"; do
	echo "$r"
	case $r in PASS*) ;; *) failed=1 ;; esac
done
exit $failed
