package helm_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"
)

// exampleJob is the example Job, decoded strictly.
func exampleJob(t *testing.T) *batchv1.Job {
	t.Helper()
	b, err := os.ReadFile("examples/workload-job.yaml")
	require.NoError(t, err)
	var job batchv1.Job
	require.NoError(t, yaml.UnmarshalStrict(b, &job))
	return &job
}

// The example Job addresses what the chart installs: the node-local Service's URL from NOTES, the Secret name
// NOTES tells to create, the token where the script reads it.
func TestExampleJobMatchesChart(t *testing.T) {
	job := exampleJob(t)
	pod := job.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	env := envOf(c)

	in := mustInstallIn(t, "monitoring", "")
	url := env["LEM_EXPORTER_URL"].Value
	assert.Equal(t, "http://lem-exporter.monitoring.svc:9636", url)
	assert.Contains(t, in.Notes, "  "+url+"\n", "the URL NOTES give")
	assert.Equal(t, "status.hostIP", env["HOST_IP"].ValueFrom.FieldRef.FieldPath)
	assert.Equal(t, "http://$(HOST_IP):9636", env["LEM_EXPORTER_HOST_URL"].Value)
	assert.Equal(t, "metadata.name", env["RUN_ID"].ValueFrom.FieldRef.FieldPath)

	require.Len(t, pod.Volumes, 1)
	secret := pod.Volumes[0].Secret.SecretName
	assert.Contains(t, in.Notes, "create secret generic "+secret+" --from-file=marker-token=")
	m := mountOf(c, pod.Volumes[0].Name)
	require.NotNil(t, m)
	require.Len(t, c.Args, 1)
	assert.Contains(t, c.Args[0], "$(cat "+filepath.Join(m.MountPath, "marker-token")+")")
	assert.Equal(t, "1", c.Resources.Limits.Name("nvidia.com/gpu", "").String())
}
