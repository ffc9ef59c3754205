package catalogue

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// committed are catalogues captured on a reference environment and kept in the repository
// (internal/catalogue/committed/<backend>-<version>.json): what `lem-run campaign --dry-run` checks parameter
// names against on a machine where the backend is not installed.
//
//go:embed committed/*.json
var committed embed.FS

// Committed returns the newest committed catalogue of a backend; ok is false when none is kept.
func Committed(backend string) (c *Catalogue, ok bool) {
	ents, _ := committed.ReadDir("committed")
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), backend+"-") {
			continue
		}
		b, err := committed.ReadFile(path.Join("committed", e.Name()))
		if err != nil {
			continue
		}
		var cand Catalogue
		if json.Unmarshal(b, &cand) != nil || cand.Backend != backend {
			continue
		}
		if c == nil || newer(cand.Version, c.Version) {
			c = &cand
		}
	}
	return c, c != nil
}

// newer compares dotted versions numerically where they are numbers (5.17.0 > 5.9.1).
func newer(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range min(len(as), len(bs)) {
		x, errx := strconv.Atoi(as[i])
		y, erry := strconv.Atoi(bs[i])
		if errx != nil || erry != nil {
			if as[i] != bs[i] {
				return as[i] > bs[i]
			}
			continue
		}
		if x != y {
			return x > y
		}
	}
	return len(as) > len(bs)
}

// String names the catalogue: backend, version and where it was captured.
func (c *Catalogue) String() string {
	return fmt.Sprintf("%s %s (captured in %s)", c.Backend, c.Version, c.Source)
}
