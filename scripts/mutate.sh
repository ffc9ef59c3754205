#!/usr/bin/env bash
# Mutation check of the energy accounting: each mutation is a plausible bug in how lem computes its headline
# numbers; the tests must fail for every one. Each mutation is applied to a copy of the working tree (the tree
# itself is never touched), the tests that guard the numbers run there, and a table says which tests caught it.
#   scripts/mutate.sh            all mutations
#   scripts/mutate.sh NAME...    some of them
# Exit status 1 if any mutation survives.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
pkgs=(./analyze/... ./internal/marker/ ./internal/manifest/ ./e2e/ ./runner/)

# name | file | perl substitution (applied once; the script checks it changed the file)
mutations=(
  "phase adjusted over the run's duration|analyze/account/account.go|s/energy\.Adjust\(float64\(pg\.HybridJ\), b\.MedianW, end\.Sub\(start\)\)/energy.Adjust(float64(pg.HybridJ), b.MedianW, in.End.Sub(in.Start))/"
  "run adjusted over the baseline window|analyze/account/account.go|s/energy\.Adjust\(float64\(mg\.Energy\.HybridJ\), b\.MedianW, dur\)/energy.Adjust(float64(mg.Energy.HybridJ), b.MedianW, b.End.Sub(b.Start))/"
  "no baseline subtracted per phase|analyze/account/account.go|s/energy\.Adjust\(float64\(pg\.HybridJ\), b\.MedianW, end\.Sub\(start\)\)/energy.Adjust(float64(pg.HybridJ), 0, end.Sub(start))/"
  "counter lag fixed at 85 ms|analyze/energy/hybrid.go|s/newHybrid\(slices\.Clone\(pts\), resets, in, lag\.Lag\)/newHybrid(slices.Clone(pts), resets, in, 85*time.Millisecond)/"
  "counter lag sign flipped|analyze/energy/hybrid.go|s/pts\[i\]\.t = pts\[i\]\.t\.Add\(-lag\)/pts[i].t = pts[i].t.Add(lag)/"
  "phase start off by one sample|analyze/account/account.go|s/m\.hybrid\.Energy\(t0, t1\)/m.hybrid.Energy(t0.Add(20*time.Millisecond), t1)/"
  "last sample interval dropped|analyze/energy/energy.go|s/\tr\.Joules \+= trapezoid\(prevT, prevP, t1, powerAt\(ss, t1\)\)\n//"
  "baseline from the upper quartile|analyze/energy/baseline.go|s/b\.MedianW, b\.P25W, b\.P75W = Quantile\(ps, 0\.5\)/b.MedianW, b.P25W, b.P75W = Quantile(ps, 0.75)/"
  "results replace instead of adding|internal/marker/grammar.go|s/strconv\.FormatFloat\(old\+nv, 'g', -1, 64\)/strconv.FormatFloat(nv+0*old, 'g', -1, 64)/"
  "J per token from adjusted energy|analyze/account/account.go|s/JPerOutputToken: per\(e, tokens\)/JPerOutputToken: per(adj, tokens)/"
  "bracketing counter reads ignored|analyze/account/account.go|s/if mg\.CounterStart != nil && mg\.CounterEnd != nil &&/if false \&\& mg.CounterStart != nil \&\&/"
)

want=("$@")
tmp=$(mktemp -d /tmp/lem-mutate.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
printf '%-40s %-9s %s\n' "mutation" "result" "caught by"
survived=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name file subst <<<"$m"
  if [ ${#want[@]} -gt 0 ] && ! printf '%s\n' "${want[@]}" | grep -qxF "$name"; then continue; fi
  work="$tmp/tree"
  rm -rf "$work"
  mkdir -p "$work"
  git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work" 2>/dev/null
  before=$(md5sum "$work/$file")
  perl -0pi -e "$subst" "$work/$file"
  if [ "$before" = "$(md5sum "$work/$file")" ]; then
    printf '%-40s %-9s %s\n' "$name" "NOT APPLIED" "(the pattern no longer matches $file)"
    survived=1
    continue
  fi
  out=$(cd "$work" && go test -count=1 -failfast "${pkgs[@]}" 2>&1)
  if [ $? -eq 0 ]; then
    printf '%-40s %-9s %s\n' "$name" "SURVIVED" "-"
    survived=1
  elif grep -q '\[build failed\]\|\[setup failed\]' <<<"$out"; then
    printf '%-40s %-9s %s\n' "$name" "BROKEN" "(the mutation does not compile: fix the mutation)"
    survived=1
  else
    caught=$(grep -oE '^--- FAIL: [A-Za-z0-9_/]+|^FAIL\s+\S+ \[build failed\]' <<<"$out" | sed 's/--- FAIL: //' | sort -u | head -6 | paste -sd ' ')
    printf '%-40s %-9s %s\n' "$name" "caught" "${caught:-build or vet failure}"
  fi
done
exit $survived
