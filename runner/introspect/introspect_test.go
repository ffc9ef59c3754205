package introspect_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lem-energy/lem/internal/catalogue"
	"github.com/lem-energy/lem/internal/testutil"
	"github.com/lem-energy/lem/runner/backend"
	"github.com/lem-energy/lem/runner/introspect"
)

// hostPython is Debian's interpreter (make test installs python3).
const hostPython = "/usr/bin/python3"

func needPython(t *testing.T) {
	if _, err := os.Stat(hostPython); err != nil {
		testutil.SkipOrFail(t, "Debian python3 at "+hostPython)
	}
}

func param(t *testing.T, c *catalogue.Catalogue, name string) catalogue.Param {
	t.Helper()
	p, err := c.Lookup(name)
	require.NoError(t, err)
	return p
}

func TestCaptureProcess(t *testing.T) {
	needPython(t)
	t.Setenv("PYTHONPATH", filepath.Join(testutil.Root(), "runner", "campaign", "testdata"))
	c, err := introspect.Capture(context.Background(), introspect.Process{Python: hostPython}, hostPython, "python",
		[]string{"argparse:ArgumentParser", "pymod:EngineArgs"})
	require.NoError(t, err)
	assert.Equal(t, "argparse", c.Module)
	assert.NotEmpty(t, c.Python)
	// Signature-declared (argparse) and dataclass-declared (like vLLM's EngineArgs) parameters.
	assert.Equal(t, true, param(t, c, "add_help").Default)
	assert.Equal(t, "-", param(t, c, "prefix_chars").Default)
	assert.Equal(t, "ArgumentParser", param(t, c, "add_help").Group)
	assert.Equal(t, float64(256), param(t, c, "max_num_seqs").Default)
	assert.Equal(t, "int", param(t, c, "max_num_seqs").Type)
	assert.Equal(t, []any{float64(16), float64(32)}, param(t, c, "block_sizes").Default)
	assert.True(t, param(t, c, "model").Required)

	// A backend that is not installed: a clear error naming it and the interpreter.
	_, err = introspect.Capture(context.Background(), introspect.Process{Python: hostPython}, hostPython, "vllm", nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "vllm is not usable with /usr/bin/python3")
	assert.Contains(t, err.Error(), "No module named 'vllm'")
	_, err = introspect.Capture(context.Background(), introspect.Process{Python: "/nonexistent/python"}, "/nonexistent/python", "python", []string{"json:JSONEncoder"})
	assert.ErrorContains(t, err, "/nonexistent/python")
}

// pythonImage builds a FROM-nothing image holding Debian's python3, its standard library and the shared
// libraries they link (no registry: docker import of a tar stream).
func pythonImage(t *testing.T) string {
	t.Helper()
	needPython(t)
	if err := exec.Command("docker", "info").Run(); err != nil {
		testutil.SkipOrFail(t, "Docker Engine: "+err.Error())
	}
	const image = "lem-test-python:latest"
	if exec.Command("docker", "image", "inspect", image).Run() == nil {
		return image
	}
	real, err := filepath.EvalSymlinks(hostPython)
	require.NoError(t, err)
	stdlib := "/usr/lib/" + filepath.Base(real)
	files := map[string]bool{real: true}
	var libs []string
	libs = append(libs, real)
	filepath.WalkDir(stdlib, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == "test" || d.Name() == "__pycache__" || d.Name() == "dist-packages" || d.Name() == "site-packages" || d.Name() == "idlelib" || d.Name() == "tkinter") {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			files[p] = true
			if strings.HasSuffix(p, ".so") {
				libs = append(libs, p)
			}
		}
		return nil
	})
	soPath := regexp.MustCompile(`(/\S+\.so[.\d]*)`)
	for _, l := range libs {
		out, _ := exec.Command("ldd", l).Output()
		for _, m := range soPath.FindAllString(string(out), -1) {
			files[m] = true
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for f := range files {
		rf, err := filepath.EvalSymlinks(f)
		if err != nil {
			continue
		}
		for d := filepath.Dir(f); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		b, err := os.ReadFile(rf)
		require.NoError(t, err)
		st, _ := os.Stat(rf)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(f, "/"), Mode: int64(st.Mode().Perm()), Size: int64(len(b))}))
		tw.Write(b)
	}
	tw.WriteHeader(&tar.Header{Name: "usr/bin/python3", Typeflag: tar.TypeSymlink, Linkname: filepath.Base(real)})
	require.NoError(t, tw.Close())
	cmd := exec.Command("docker", "import", "-", image)
	cmd.Stdin = io.Reader(&buf)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return image
}

func TestCaptureInContainer(t *testing.T) {
	image := pythonImage(t)
	d, err := backend.NewDocker(backend.DockerOptions{Image: image})
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.Preflight(context.Background()))
	c, err := introspect.Capture(context.Background(), d, "python3", "python", []string{"argparse:ArgumentParser"})
	require.NoError(t, err)
	assert.Contains(t, c.Source, image+"@sha256:")
	assert.Equal(t, true, param(t, c, "add_help").Default)
	host, err := introspect.Capture(context.Background(), introspect.Process{Python: hostPython}, hostPython, "python", []string{"argparse:ArgumentParser"})
	require.NoError(t, err)
	assert.Equal(t, host.Parameters, c.Parameters, "the same interpreter inside and outside the container")
	assert.Equal(t, host.Python, c.Python)

	_, err = introspect.Capture(context.Background(), d, "python3", "transformers", nil)
	assert.ErrorContains(t, err, "transformers is not usable with python3 in "+image)
}

func TestTransformersCatalogueAudit(t *testing.T) {
	c, err := catalogue.Load(filepath.Join("..", "..", "internal", "catalogue", "committed", "transformers-5.17.json"))
	require.NoError(t, err)
	assert.Equal(t, "transformers", c.Backend)
	assert.True(t, strings.HasPrefix(c.Version, "5.17"), c.Version)
	assert.Equal(t, float64(20), param(t, c, "max_length").Default)
	assert.Equal(t, "generation_config", param(t, c, "max_new_tokens").Group)
	assert.Equal(t, float64(1), param(t, c, "num_beams").Default)

	_, err = c.Lookup("max_new_token")
	assert.EqualError(t, err, `unknown transformers parameter "max_new_token" (did you mean "max_new_tokens"?)`)
	err = c.Check(map[string]any{"max_new_tokens": 128, "num_beam": 2, "temprature": 0.7})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"num_beam" (did you mean "num_beams"?)`)
	assert.Contains(t, err.Error(), `"temprature" (did you mean "temperature"?)`)

	inf, err := c.Effective(map[string]any{"max_new_tokens": 128, "do_sample": false})
	require.NoError(t, err)
	assert.Len(t, inf.Effective, len(c.Parameters), "every catalogue parameter has an effective value")
	explicit := 0
	for _, e := range inf.Effective {
		if e.Explicit {
			explicit++
		}
		if e.Name == "max_new_tokens" {
			assert.Equal(t, 128, e.Value)
		}
		if e.Name == "num_beams" {
			assert.False(t, e.Explicit)
			assert.Equal(t, float64(1), e.Value)
		}
	}
	assert.Equal(t, 2, explicit)
	assert.True(t, catalogue.EnergyRelevant("max_new_tokens"))
	assert.True(t, catalogue.EnergyRelevant("cache_implementation"))
	assert.False(t, catalogue.EnergyRelevant("output_scores"))
}
