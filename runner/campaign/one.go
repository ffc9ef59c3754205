package campaign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lem-energy/lem/internal/manifest"
)

// RunOne measures one run of the plan here and now: what a cluster job runs (lem-run campaign --run-one) on the
// node its scheduler chose, with opts.Devices the GPUs it was granted. It refuses a campaign file that differs
// from the one the campaign was started with, holds the run's own lock while it measures (a job that outlived
// its node's failure may still be measuring it), keeps the run's earlier attempt under .attempts/, executes the
// configuration's warm-ups, measures the run with job recorded in its manifest, and returns its state. The
// campaign's campaign.json belongs to the lem-run that submitted the job: RunOne never writes it.
func RunOne(ctx context.Context, p *Prepared, runID string, opts Options, job *manifest.Job) (*RunState, error) {
	var pl *Planned
	for i := range p.Plan {
		if p.Plan[i].RunID == runID {
			pl = &p.Plan[i]
		}
	}
	if pl == nil {
		return nil, fmt.Errorf("run %s is not in the plan of campaign file %s (was the file changed since the job was submitted?)",
			runID, p.File.path)
	}
	if st, err := ReadState(p.out); err == nil && st.DefinitionSHA256 != "" {
		def, err := p.File.Definition()
		if err != nil {
			return nil, err
		}
		if sum := sha256.Sum256(def); hex.EncodeToString(sum[:]) != st.DefinitionSHA256 {
			return nil, fmt.Errorf("campaign file %s changed since the campaign in %s was submitted: run %s not measured under another definition",
				p.File.path, p.out, runID)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	runs := filepath.Join(p.out, ".state", "runs")
	if err := os.MkdirAll(runs, 0o755); err != nil {
		return nil, fmt.Errorf("campaign directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(runs, runID+".lock"), "run "+runID+" is being measured",
		"cancel that job")
	if err != nil {
		return nil, err
	}
	defer unlock()
	ex := &executor{p: p, opts: opts, st: &State{}, containers: map[string]*backendContainer{}, job: job}
	defer ex.closeContainers()
	if err := ex.warmups(ctx, map[*Config]bool{pl.Config: true}); err != nil {
		return nil, fmt.Errorf("warm-up of run %s: %w", runID, err)
	}
	rs := &RunState{Position: pl.Position, Cycle: pl.Cycle, Experiment: pl.Config.Name, RunID: runID}
	if job != nil {
		rs.Node = job.Node
	}
	err = ex.run(ctx, pl, rs)
	return rs, err
}
