package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSlurmJobStatus(t *testing.T) {
	cases := []struct{ code2, wait, want string }{
		{"0:0", "0", "ok"},
		{"3:0", "768", "failed"},
		{"0:15", "15", "interrupted"},
		{"0:9", "9", "interrupted"},
		{"", "768", "failed"},
		{"", "15", "interrupted"},
		{"", "0", "ok"},
		{"", "", "ended"},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, slurmJobStatus(c.code2, c.wait), "%q %q", c.code2, c.wait)
	}
	c := &slurmJobCmd{Experiment: "slurm/{partition}/{account}/{user}@{cluster}"}
	env := map[string]string{"SLURM_JOB_USER": "ada", "SLURM_JOB_PARTITION": "gpu", "SLURM_CLUSTER_NAME": "c1",
		"SLURM_JOB_ACCOUNT": "(null)"}
	assert.Equal(t, "slurm/gpu/-/ada@c1", c.experiment(func(k string) string { return env[k] }))
}
