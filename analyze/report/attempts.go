package report

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// AttemptsDir is where a campaign directory keeps the earlier attempts of its runs, as <run id>.<n> (n from 1,
// oldest first). The run directory named by the run id holds the current attempt.
const AttemptsDir = ".attempts"

// EarlierAttemptDir is the directory the n-th earlier attempt of a run is kept in.
func EarlierAttemptDir(campaignDir, runID string, n int) string {
	return filepath.Join(campaignDir, AttemptsDir, runID+"."+strconv.Itoa(n))
}

// parseAttempt reads an earlier attempt's directory name (<run id>.<n>).
func parseAttempt(name string) (runID string, n int, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || strings.ContainsAny(name, `/\`) || name[:i] == "." || name[:i] == ".." {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 1 || strconv.Itoa(n) != name[i+1:] {
		return "", 0, false
	}
	return name[:i], n, true
}

// EarlierAttempts lists the earlier attempts kept in a campaign directory: each run id's directories under
// .attempts/, oldest first. A directory without .attempts/ has none.
func EarlierAttempts(campaignDir string) (map[string][]string, error) {
	ents, err := os.ReadDir(filepath.Join(campaignDir, AttemptsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string][]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("earlier attempts: %w", err)
	}
	type attempt struct {
		n   int
		dir string
	}
	by := map[string][]attempt{}
	for _, e := range ents {
		id, n, ok := parseAttempt(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		by[id] = append(by[id], attempt{n, filepath.Join(campaignDir, AttemptsDir, e.Name())})
	}
	out := make(map[string][]string, len(by))
	for id, as := range by {
		slices.SortFunc(as, func(a, b attempt) int { return a.n - b.n })
		for _, a := range as {
			out[id] = append(out[id], a.dir)
		}
	}
	return out, nil
}

// Attempts is the one rule for how often a campaign's run was measured, shared by lem-analyze (report and
// validate) and campaign.json: its run directory in the campaign directory (the current attempt, if there is one)
// and its earlier attempts under .attempts/. earlier is what EarlierAttempts returned for the campaign directory
// (nil: read here).
func Attempts(campaignDir, runID string, earlier map[string][]string) int {
	if earlier == nil {
		earlier, _ = EarlierAttempts(campaignDir)
	}
	n := len(earlier[runID])
	if st, err := os.Stat(filepath.Join(campaignDir, runID)); err == nil && st.IsDir() {
		n++
	}
	return n
}

// isEarlierAttempt says whether a run directory is an earlier attempt kept under a campaign's .attempts/.
func isEarlierAttempt(runDir string) bool {
	return filepath.Base(filepath.Dir(runDir)) == AttemptsDir
}

// campaignDirOf is the campaign directory a run directory belongs to, current or earlier attempt.
func campaignDirOf(runDir string) string {
	parent := filepath.Dir(runDir)
	if isEarlierAttempt(runDir) {
		return filepath.Dir(parent)
	}
	return parent
}
