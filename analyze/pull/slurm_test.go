package pull_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/lem-energy/lem/analyze/pull"
	"github.com/lem-energy/lem/internal/marker"
)

func TestSlurmRunIDs(t *testing.T) {
	cases := []struct {
		cluster, job string
		restart      int
		id           string
	}{
		{"lemtest", "17", 0, "slurm-lemtest-17"},
		{"lemtest", "17", 2, "slurm-lemtest-17-r2"},
		{"my-cluster-5", "170", 0, "slurm-my-cluster-5-170"},
		{"odd name/x", "9", 1, "slurm-odd_name_x-9-r1"},
		{"", "4", 0, "slurm-4"},
	}
	for _, c := range cases {
		id := pull.SlurmRunID(c.cluster, c.job, c.restart)
		assert.Equal(t, c.id, id)
		assert.NoError(t, marker.ValidRunID(id), "a valid run id")
		assert.Equal(t, c.job, pull.SlurmJobOf(id), "%s names job %s", id, c.job)
	}
	for _, id := range []string{"run-17", "slurm-", "slurm-lemtest-17x", "slurmlemtest-17", "slurm-lemtest-r1"} {
		assert.Empty(t, pull.SlurmJobOf(id), id)
	}
	runs := []pull.RunInfo{{RunID: "slurm-a-17"}, {RunID: "slurm-a-170"}, {RunID: "slurm-a-17-r1", Instance: "n2"},
		{RunID: "bench-17"}}
	assert.Equal(t, []pull.RunInfo{{RunID: "slurm-a-17"}, {RunID: "slurm-a-17-r1", Instance: "n2"}}, pull.SelectSlurmJob(runs, "17"))
}
