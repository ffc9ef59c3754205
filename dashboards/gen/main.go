// Command gen writes lem's Grafana dashboards into the dashboards directory: go run ./dashboards/gen
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/lem-energy/lem/dashboards"
)

func main() {
	dir := "dashboards"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	for name, d := range dashboards.All() {
		b, err := dashboards.Render(d)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
