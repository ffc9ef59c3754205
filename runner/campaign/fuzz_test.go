package campaign_test

import (
	"io"
	"regexp"
	"testing"

	"github.com/lem-energy/lem/runner/campaign"
)

var runIDChars = regexp.MustCompile(`^[A-Za-z0-9._-]+-c[0-9]+$`)

// FuzzCampaignParse feeds campaign files to the loader and planner: whatever they accept has a plan within
// max_runs, one safe and distinct run id per planned run, and a definition for the campaign state.
func FuzzCampaignParse(f *testing.F) {
	f.Add([]byte("name: g\ncycles: 2\nexperiments:\n  - name: a-{bs}\n    command: [run, \"--bs={bs}\"]\n    vary: {bs: [1, 8]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := campaign.Parse("campaign.yaml", b)
		if err != nil {
			return
		}
		if _, err := file.Definition(); err != nil {
			t.Fatalf("definition of an accepted file: %v", err)
		}
		plan, cfgs, err := file.Plan()
		if err != nil {
			return
		}
		if len(plan) > file.MaxRuns || len(plan) != len(cfgs)*file.Cycles {
			t.Fatalf("%d runs planned for %d configurations × %d cycles, max_runs %d", len(plan), len(cfgs), file.Cycles, file.MaxRuns)
		}
		seen := map[string]bool{}
		for _, p := range plan {
			if !runIDChars.MatchString(p.RunID) || len(p.RunID) == 0 {
				t.Fatalf("run id %q", p.RunID)
			}
			if seen[p.RunID] {
				t.Fatalf("run id %s planned twice", p.RunID)
			}
			seen[p.RunID] = true
		}
		file.PrintPlan(io.Discard, plan, cfgs)
	})
}
