#!/usr/bin/env bash
# Mutation check of the energy accounting: each mutation is a plausible bug in how lem computes its headline
# numbers; the tests must fail for every one. Each mutation is applied to a copy of the working tree (the tree
# itself is never touched; the copy is removed on exit, Ctrl-C and kill included), the tests that guard the
# numbers run there, and a table says which tests caught it.
#   scripts/mutate.sh            all mutations
#   scripts/mutate.sh NAME...    some of them
#   scripts/mutate.sh -l         list the mutations
#   scripts/mutate.sh -n [NAME...] only check that each applies and compiles (quick, after editing the code)
# The unmutated copy is tested first: a test that already fails would make every mutation look caught. The tests
# run in stages, each only if the one before passed: the mutated file's own package, the analyzer's fast packages,
# then the end-to-end ones; a mutation is caught by the first stage that fails (the table names its tests).
# Exit status 1 if any mutation survives, does not apply or does not compile; 2 if the unmutated tree fails.
set -uo pipefail
cd "$(dirname "$0")/.."
stages=("./analyze/... ./internal/marker/ ./internal/manifest/" "./e2e/ ./runner/")

# name | file | perl substitution (applied once; the script checks it changed the file)
mutations=(
  "phase adjusted over the run's duration|analyze/account/account.go|s/energy\.Adjust\(float64\(e\), idle, d\)/energy.Adjust(float64(e), idle, a.in.End.Sub(a.in.Start))/"
  "run adjusted over the baseline window|analyze/account/account.go|s/energy\.Adjust\(float64\(mg\.Energy\.HybridJ\), idle, dur\)/energy.Adjust(float64(mg.Energy.HybridJ), idle, b.End.Sub(b.Start))/"
  "no baseline subtracted per phase or window|analyze/account/account.go|s/energy\.Adjust\(float64\(e\), idle, d\)/energy.Adjust(float64(e), 0*idle, d)/"
  "counter lag fixed at 85 ms|analyze/energy/hybrid.go|s/h, err := newHybrid\(pts, resets, in, lag\.Lag\)/h, err := newHybrid(pts, resets, in, 85*time.Millisecond)/"
  "counter lag sign flipped|analyze/energy/hybrid.go|s/h := &Hybrid\{pts: pts, in: in, Lag: lag,/h := \&Hybrid{pts: pts, in: in, Lag: -lag,/"
  "phase start off by one sample|analyze/account/account.go|s/m\.hybrid\.Energy\(t0, t1\)/m.hybrid.Energy(t0.Add(20*time.Millisecond), t1)/"
  "last sample interval dropped|analyze/energy/energy.go|s/\tr\.Joules \+= trapezoid\(prevT, prevP, a1, powerAt\(ss, a1\)\)\n//"
  "running integral's block bases not carried|analyze/energy/energy.go|s/in\.base\[b\] = in\.base\[b-1\] \+ ends\[b-1\]/in.base[b] = ends[b-1]/"
  "baseline from the upper quartile|analyze/energy/baseline.go|s/b\.MedianW, b\.P25W, b\.P75W = Quantile\(ps, 0\.5\)/b.MedianW, b.P25W, b.P75W = Quantile(ps, 0.75)/"
  "results replace instead of adding|internal/marker/grammar.go|s/strconv\.FormatFloat\(old\+nv, 'g', -1, 64\)/strconv.FormatFloat(nv+0*old, 'g', -1, 64)/"
  "J per token from adjusted energy|analyze/account/account.go|s/d\.JPerOutputToken, d\.JPerOutputTokenAdj = per\(e, d\.OutputTokens\)/d.JPerOutputToken, d.JPerOutputTokenAdj = per(adj, d.OutputTokens)/"
  "bracketing counter reads ignored|analyze/account/account.go|s/if mg\.CounterStart != nil && mg\.CounterEnd != nil &&/if false \&\& mg.CounterStart != nil \&\&/"
  "active idle subtracted as deep idle|analyze/account/account.go|s/mg\.Energy\.HybridJ - manifest\.Num\(ai\.MedianW\*dur\.Seconds\(\)\)/mg.Energy.HybridJ - manifest.Num(a.idle[idx]*dur.Seconds())/"
  "baseline temperature correction reversed|analyze/account/idle.go|s/f\.SlopeWPerC\*\(runTempC-\*b\.TempMeanC\)/f.SlopeWPerC*(*b.TempMeanC-runTempC)/"
  "prompt weighted in every interval|analyze/account/requests.go|s/if !r\.start\.Before\(t\) && r\.start\.Before\(u\) \{/if r.start.Before(u) {/"
  "process idle share in J, not microjoules|analyze/account/process.go|s/out\.IdleW \* bounds\[k\+1\]\.Sub\(bounds\[k\]\)\.Seconds\(\) \* microjoules/out.IdleW * bounds[k+1].Sub(bounds[k]).Seconds()/"
  "aliasing from the larger side of the split|analyze/report/uncertainty.go|s/e := max\(min\(in\.Joules, iv\.CounterJ-in\.Joules\), 0\)/e := max(max(in.Joules, iv.CounterJ-in.Joules), 0)/"
  "short-phase shape at the threshold length|analyze/report/uncertainty.go|s/rho = max\(rho, ShortShapeU\(w\.end\.Sub\(w\.start\)\)\)/rho = max(rho, ShortShapeU(shortBelow))/"
  "marker line's own time ignored|internal/marker/line.go|s/\treturn t, nil\n}/\treturn now, nil\n}/"
)

if [ "${1:-}" = -l ]; then
  for m in "${mutations[@]}"; do printf '%s\n' "${m%%|*}"; done
  exit 0
fi
check=
if [ "${1:-}" = -n ]; then
  check=1
  shift
fi
want=("$@")
for w in "${want[@]}"; do
  if ! printf '%s\n' "${mutations[@]}" | cut -d'|' -f1 | grep -qxF "$w"; then
    echo "mutate.sh: no mutation named \"$w\" (scripts/mutate.sh -l lists them)" >&2
    exit 2
  fi
done

tmp=$(mktemp -d /tmp/lem-mutate.XXXXXX)
pid=
cleanup() {
  # The tests run in their own process group (setsid): end it, test binaries included, then remove the copy.
  if [ -n "$pid" ]; then kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# copy makes a fresh copy of the working tree (tracked and untracked, not ignored) at $tmp/tree.
copy() {
  rm -rf "$tmp/tree"
  mkdir -p "$tmp/tree"
  git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$tmp/tree" 2>/dev/null
}

# run tests the copy stage by stage until one fails, the packages in $1 first; it leaves the output in $tmp/out
# and returns the status.
run() {
  local rc=0
  : >"$tmp/out"
  for st in ${1:+"$1"} "${stages[@]}"; do
    # shellcheck disable=SC2086 # a stage is a list of packages
    (cd "$tmp/tree" && exec setsid -w go test -count=1 -failfast $st) >>"$tmp/out" 2>&1 &
    pid=$!
    wait "$pid"
    rc=$?
    pid=
    [ $rc -ne 0 ] && break
  done
  return $rc
}

# caught names the failed top-level tests, package.TestName (go test prints a package's FAIL line after its tests).
caught() {
  awk '/^--- FAIL: /{t[n++]=$3; next}
       /^FAIL\t/{p=$2; sub(/.*\//, "", p); for (i=0; i<n; i++) print p "." t[i]; n=0}' "$tmp/out" | sort -u | head -6 | paste -sd ' '
}

if [ -z "$check" ]; then
  copy
  if ! run; then
    echo "mutate.sh: the tests fail on the unmutated tree; fix them first:" >&2
    grep -E '^(--- FAIL|FAIL|panic)' "$tmp/out" | head -20 >&2
    exit 2
  fi
fi

printf '%-44s %-11s %s\n' "mutation" "result" "caught by"
survived=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file subst <<<"$m"
  if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qxF "$name"; then continue; fi
  copy
  before=$(md5sum <"$tmp/tree/$file")
  perl -0pi -e "$subst" "$tmp/tree/$file"
  if [ "$before" = "$(md5sum <"$tmp/tree/$file")" ]; then
    printf '%-44s %-11s %s\n' "$name" "NOT APPLIED" "(the pattern no longer matches $file)"
    survived=1
    continue
  fi
  if [ -n "$check" ]; then
    # Compiling the package's tests (none run) is what a broken mutation fails.
    if (cd "$tmp/tree" && go test -count=1 -run '^$' "./$(dirname "$file")/") >"$tmp/out" 2>&1; then
      printf '%-44s %-11s %s\n' "$name" "applies" "-"
    else
      printf '%-44s %-11s %s\n' "$name" "BROKEN" "(the mutation does not compile: fix the mutation)"
      survived=1
    fi
    continue
  fi
  if run "./$(dirname "$file")/"; then
    printf '%-44s %-11s %s\n' "$name" "SURVIVED" "-"
    survived=1
  elif grep -q '\[build failed\]\|\[setup failed\]' "$tmp/out"; then
    printf '%-44s %-11s %s\n' "$name" "BROKEN" "(the mutation does not compile: fix the mutation)"
    survived=1
  else
    c=$(caught)
    printf '%-44s %-11s %s\n' "$name" "caught" "${c:-(no test named: see the output of go test)}"
  fi
done
exit $survived
