// Package introspect captures an inference backend's parameter catalogue (versions, every parameter with its type
// and default) by running a small Python snippet in the backend's own environment, and audits experiments'
// backend parameters against it.
package introspect

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/catalogue"
)

//go:embed catalogue.py
var script string

// Backends lem can introspect. "python" catalogues any module:attr targets (a class or callable).
var Backends = []string{"transformers", "vllm", "tensorrt-llm", "python"}

// Executor runs a command in the backend's environment and returns its standard output and exit code.
type Executor interface {
	Output(ctx context.Context, cmd []string) (stdout, stderr []byte, code int, err error)
	// Source names the environment (image ID, interpreter path) for the catalogue's provenance.
	Source() string
}

// Process runs the snippet with a local Python interpreter.
type Process struct{ Python string }

// Output runs cmd with the interpreter's environment.
func (p Process) Output(ctx context.Context, cmd []string) ([]byte, []byte, int, error) {
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), errb.Bytes(), ee.ExitCode(), nil
	}
	return out.Bytes(), errb.Bytes(), 0, err
}

// Source is the interpreter.
func (p Process) Source() string { return p.Python }

// Capture runs the catalogue snippet for backend with python (an interpreter name or path in ex's environment).
// targets are module:attr names for the "python" backend.
func Capture(ctx context.Context, ex Executor, python, backend string, targets []string) (*catalogue.Catalogue, error) {
	if !slices.Contains(Backends, backend) {
		return nil, fmt.Errorf("unknown backend %q (known: %s)", backend, strings.Join(Backends, ", "))
	}
	if backend == "python" && len(targets) == 0 {
		return nil, errors.New(`backend "python" needs at least one module:attr target`)
	}
	cmd := append([]string{python, "-c", script, backend}, targets...)
	out, stderr, code, err := ex.Output(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("running %s in %s: %w", python, ex.Source(), err)
	}
	var c struct {
		catalogue.Catalogue
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &c); jerr != nil {
		return nil, fmt.Errorf("%s in %s exited %d without a catalogue: %s", python, ex.Source(), code,
			tail(string(stderr)+string(out), 400))
	}
	if c.Error != "" {
		return nil, fmt.Errorf("%s is not usable with %s in %s: %s", backend, python, ex.Source(), c.Error)
	}
	if code != 0 || len(c.Parameters) == 0 {
		return nil, fmt.Errorf("%s in %s exited %d with %d parameters: %s", python, ex.Source(), code,
			len(c.Parameters), tail(string(stderr), 400))
	}
	cat := c.Catalogue
	cat.Source, cat.CapturedAt = ex.Source(), time.Now().UTC()
	return &cat, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
