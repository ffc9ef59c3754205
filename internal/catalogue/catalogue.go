// Package catalogue is the contract of an inference backend's parameter catalogue: every parameter with its group,
// type and default as captured in one environment (lem-run introspect), name lookup with typo suggestions,
// effective values for a run, and the curated list of energy-relevant parameters the audit highlights.
package catalogue

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lem-energy/lem/internal/fileutil"
	"github.com/lem-energy/lem/internal/manifest"
)

// Param is one parameter of the catalogue.
type Param struct {
	Name     string `json:"name"`
	Group    string `json:"group"` // where it is declared: generation_config, generate, engine, sampling, llm, …
	Type     string `json:"type"`
	Default  any    `json:"default"`
	Required bool   `json:"required"`
}

// Catalogue is what a backend accepts, as captured in one environment.
type Catalogue struct {
	Backend    string    `json:"backend"`
	Module     string    `json:"module"`
	Version    string    `json:"version"`
	Python     string    `json:"python"`
	Torch      string    `json:"torch,omitempty"`
	CUDA       string    `json:"cuda,omitempty"`
	Source     string    `json:"source"` // the image ID, or the interpreter
	CapturedAt time.Time `json:"captured_at"`
	Parameters []Param   `json:"parameters"`
}

// Load reads a catalogue file written by Save (or `lem-run introspect -o`).
func Load(path string) (*Catalogue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading catalogue: %w", err)
	}
	var c Catalogue
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("catalogue %s: %w", path, err)
	}
	if c.Backend == "" || len(c.Parameters) == 0 {
		return nil, fmt.Errorf("catalogue %s: no backend or no parameters (not a lem catalogue?)", path)
	}
	return &c, nil
}

// Save writes c as indented JSON.
func (c *Catalogue) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := fileutil.WriteAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("writing catalogue: %w", err)
	}
	return nil
}

// Lookup finds a parameter by name, or by group.name where a name is declared in several groups.
func (c *Catalogue) Lookup(name string) (Param, error) {
	var hits []Param
	for _, p := range c.Parameters {
		if p.Name == name || p.Group+"."+p.Name == name {
			hits = append(hits, p)
		}
	}
	switch len(hits) {
	case 0:
		msg := fmt.Sprintf("unknown %s parameter %q", c.Backend, name)
		if s := c.closest(name); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return Param{}, errors.New(msg)
	case 1:
		return hits[0], nil
	}
	var qs []string
	for _, h := range hits {
		qs = append(qs, h.Group+"."+h.Name)
	}
	return hits[0], fmt.Errorf("%s parameter %q is ambiguous: write one of %s", c.Backend, name, strings.Join(qs, ", "))
}

// closest is the catalogue name nearest to name by edit distance, if any is near enough to be a typo.
func (c *Catalogue) closest(name string) string {
	best, bestD := "", len(name)/2+2
	for _, p := range c.Parameters {
		if d := distance(strings.ToLower(name), strings.ToLower(p.Name)); d < bestD {
			best, bestD = p.Name, d
		}
	}
	return best
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Check reports every parameter name in params the catalogue does not know, one error each.
func (c *Catalogue) Check(params map[string]any) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if _, err := c.Lookup(k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Effective is the value of every catalogue parameter for a run that sets params explicitly (checked first).
func (c *Catalogue) Effective(params map[string]any) (*manifest.Inference, error) {
	if err := c.Check(params); err != nil {
		return nil, err
	}
	explicit := map[string]any{}
	for k, v := range params {
		p, _ := c.Lookup(k)
		explicit[p.Group+"."+p.Name] = v
	}
	inf := &manifest.Inference{Backend: c.Backend, Version: c.Version, Torch: c.Torch, CUDA: c.CUDA, Source: c.Source,
		Explicit: params}
	for _, p := range c.Parameters {
		e := manifest.EffectiveParam{Name: p.Name, Group: p.Group, Value: p.Default}
		if v, ok := explicit[p.Group+"."+p.Name]; ok {
			e.Value, e.Explicit = v, true
		}
		inf.Effective = append(inf.Effective, e)
	}
	return inf, nil
}

// energyRelevant are name fragments of parameters known to change energy per token: batching, lengths, numeric
// precision and quantization, parallelism, KV-cache, CUDA graphs and compilation, speculative decoding, sampling
// work.
var energyRelevant = []string{"batch", "max_num_seqs", "max_new_tokens", "max_tokens", "max_length", "min_new_tokens",
	"max_model_len", "dtype", "quantiz", "kv_cache", "cache_implementation", "use_cache", "block_size",
	"gpu_memory_utilization", "tensor_parallel", "pipeline_parallel", "data_parallel", "expert_parallel",
	"enforce_eager", "cuda_graph", "compilation", "compile", "speculative", "num_speculative", "prompt_lookup",
	"assistant", "num_beams", "do_sample", "prefix_caching", "chunked_prefill", "attn_implementation", "attention",
	"scheduling", "enable_lora", "swap_space", "cpu_offload"}

// EnergyRelevant says whether a parameter belongs to the curated list of those that change energy per token.
func EnergyRelevant(name string) bool {
	n := strings.ToLower(name)
	for _, f := range energyRelevant {
		if strings.Contains(n, f) {
			return true
		}
	}
	return false
}
